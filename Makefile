# Segue: `make demo` runs the platform end to end, `make test` runs the whole suite.
# Both install what they need first; a second install does nothing (stamp files).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MPD    ?=
DEMO_DIR ?= demo-data
PYTEST_ARGS ?=

export PYTHONUNBUFFERED := 1
# Benchmarks and tests may import TensorFlow before Segue, whose package sets this for `segue` itself.
export TF_USE_LEGACY_KERAS := 1

.PHONY: install prerequisites services demo test bench lock clean

install: $(STAMP)

prerequisites:
	@command -v java >/dev/null || { echo "error: Java 17+ is needed by Spark. Install it: apt-get install -y openjdk-17-jre-headless" >&2; exit 1; }
	@command -v mvn >/dev/null || { echo "error: Maven is needed to fetch Kafka's broker jars (once, into ~/.cache/segue). Install it: apt-get install -y maven" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "error: Python 3.11 is needed (found $$($(PYTHON) --version)). Set PYTHON=/path/to/python3.11" >&2; exit 1; }

# Servers the tests start as local processes (no Docker): redis-server from Debian's packages.
services:
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing redis-server (Debian package)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null; \
	  else \
	    echo "error: redis-server is needed by the tests. Install it: sudo apt-get install -y redis-server" >&2; exit 1; \
	  fi; }

$(STAMP): pyproject.toml requirements.lock | prerequisites
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24" "setuptools>=77" wheel
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

demo: install
	$(BIN)/segue demo --out $(DEMO_DIR) $(if $(MPD),--mpd $(MPD))

test: install services
	@# The tests start their own Milvus servers, and one runs per machine: stop the demo's first.
	@if [ -f $(DEMO_DIR)/segue.yaml ]; then $(BIN)/segue --config $(DEMO_DIR)/segue.yaml milvus stop || true; fi
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install services
	$(BIN)/python benchmarks/bench_batch.py
	$(BIN)/python benchmarks/bench_features.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_index_search.py
	$(BIN)/python benchmarks/bench_default_index.py
	$(BIN)/python benchmarks/bench_index_rebuild.py --data $(DEMO_DIR)   # needs `make demo` first
	$(BIN)/python benchmarks/bench_stream.py --data $(DEMO_DIR)          # needs `make demo` first
	$(BIN)/python benchmarks/bench_serving.py --data $(DEMO_DIR)         # needs `make demo` first
	$(BIN)/python benchmarks/bench_ranking.py --data $(DEMO_DIR)         # needs `make demo` first

# Re-resolve the pinned set after editing pyproject.toml's dependencies.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade "pip>=24" "setuptools>=77" wheel
	.lock-venv/bin/pip install --quiet ".[dev]"
	.lock-venv/bin/pip freeze --exclude segue > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
