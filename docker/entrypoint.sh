#!/usr/bin/env bash
# The image's entrypoint: the first argument names a role, the rest go to its command.
# Anything that is not a role runs as given: `segue config show`, `bash`, ...
set -euo pipefail

# A bind-mounted /data starts empty; Feast's registry folder is linked here (see the Dockerfile).
mkdir -p /data/feast

role="${1:-serve}"
if [ "$#" -gt 0 ]; then shift; fi

case "$role" in
  serve) exec segue serve --host 0.0.0.0 --port 8000 "$@" ;;
  stream) exec segue stream run "$@" ;;
  rebuild) exec segue index rebuild "$@" ;;
  train) exec segue train "$@" ;;
  apply) exec segue features apply "$@" ;;
  materialize) exec segue features materialize "$@" ;;
  ingest|features|examples) exec segue batch "$role" "$@" ;;
  demo) exec segue demo --out /data/demo "$@" ;;
  # A standalone Spark cluster from the same pyspark as the jobs, so driver and executors match.
  spark-master) exec spark-class org.apache.spark.deploy.master.Master "$@" ;;
  spark-worker) exec spark-class org.apache.spark.deploy.worker.Worker "$@" ;;
  *) exec "$role" "$@" ;;
esac
