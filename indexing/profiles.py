"""Index profiles: which Milvus engine, index type and parameters a deployment uses.

Every profile searches by inner product: the towers emit L2-normalised vectors, so inner product
is cosine, and the GPU indexes have no COSINE metric. Parameters are checked here, before a
rebuild starts, because Milvus reports a bad one only after the catalogue has been embedded and
written (and Milvus Lite ignores some silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

METRIC = "IP"
TOP_K = 100  # what serving and validation ask for; search parameters must reach it
GPU_MAX_LIMIT = 1024  # Milvus GPU indexes return at most this many hits per query


class InvalidIndexProfile(ValueError):
    """A profile's parameters cannot build or search its index; the message names the key."""


@dataclass(frozen=True)
class IndexProfile:
    name: str
    engine: str  # "lite" (a local file) or "server" (a Milvus standalone or cluster)
    index_type: str
    build_params: Mapping[str, Any] = field(default_factory=dict)
    search_params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def gpu(self) -> bool:
        return self.index_type.startswith("GPU_")

    def with_overrides(self, build: Mapping[str, Any], search: Mapping[str, Any]) -> "IndexProfile":
        return replace(self, build_params={**self.build_params, **build},
                       search_params={**self.search_params, **search})

    def validate(self, dim: int, limit: int = TOP_K) -> "IndexProfile":
        """Raises InvalidIndexProfile on the first parameter that cannot work; returns self."""
        check = _CHECKS.get(self.index_type)
        if check is None:
            raise InvalidIndexProfile(f"profile {self.name!r}: unsupported index type {self.index_type!r}; "
                                      f"choose one of {sorted(_CHECKS)}")
        if self.gpu and limit > GPU_MAX_LIMIT:
            raise InvalidIndexProfile(f"profile {self.name!r}: limit {limit} exceeds the GPU cap of "
                                      f"{GPU_MAX_LIMIT} hits per query")
        known = _KNOWN_PARAMS[self.index_type]
        for kind, params in (("build", self.build_params), ("search", self.search_params)):
            unknown = sorted(set(params) - known[kind])
            if unknown:
                raise InvalidIndexProfile(f"profile {self.name!r}: unknown {kind} parameter(s) {unknown} for "
                                          f"{self.index_type}; known: {sorted(known[kind])}")
        check(self, dim, limit)
        return self

    def index_params(self) -> dict[str, Any]:
        return {"index_type": self.index_type, "metric_type": METRIC, "params": dict(self.build_params)}

    def search_request(self, limit: int = TOP_K) -> dict[str, Any]:
        """Search parameters for `limit` hits: a graph index's candidate list must hold them all."""
        params = dict(self.search_params)
        if self.index_type == "HNSW":
            params["ef"] = max(int(params["ef"]), limit)
        elif self.index_type == "GPU_CAGRA":
            params["itopk_size"] = min(GPU_MAX_LIMIT, max(int(params["itopk_size"]), limit))
        return {"metric_type": METRIC, "params": params}

    def memory_bytes(self, rows: int, dim: int) -> int:
        """Approximate index memory (CPU RAM or GPU memory) for `rows` vectors of `dim` floats."""
        raw = rows * dim * 4
        p = self.build_params
        if self.index_type == "HNSW":
            return raw + rows * int(p["M"]) * 2 * 4  # layer-0 links dominate the graph
        if self.index_type == "GPU_CAGRA":
            return raw + rows * int(p["graph_degree"]) * 4
        if self.index_type == "GPU_IVF_PQ":
            m, nbits = int(p["m"]), int(p.get("nbits", 8))
            return rows * (m * nbits // 8 + 8) + int(p["nlist"]) * dim * 4
        return raw  # FLAT and IVF_FLAT keep the vectors as they are


def _require_int(profile: IndexProfile, params: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = params.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidIndexProfile(f"profile {profile.name!r}: {key}={value!r} must be an integer in [{low}, {high}]")
    return value


def _check_flat(profile: IndexProfile, dim: int, limit: int) -> None:
    pass


def _check_hnsw(profile: IndexProfile, dim: int, limit: int) -> None:
    _require_int(profile, profile.build_params, "M", 2, 2048)
    _require_int(profile, profile.build_params, "efConstruction", 1, 2**31 - 1)
    # HNSW returns at most ef candidates, so a search with ef < limit cannot fill its top-k.
    _require_int(profile, profile.search_params, "ef", limit, 2**15)


def _check_ivf(profile: IndexProfile, dim: int, limit: int) -> None:
    nlist = _require_int(profile, profile.build_params, "nlist", 1, 65536)
    _require_int(profile, profile.search_params, "nprobe", 1, nlist)


def _check_cagra(profile: IndexProfile, dim: int, limit: int) -> None:
    b, s = profile.build_params, profile.search_params
    graph = _require_int(profile, b, "graph_degree", 1, 1024)
    _require_int(profile, b, "intermediate_graph_degree", graph, 1024)
    if b.get("build_algo", "IVF_PQ") not in ("IVF_PQ", "NN_DESCENT"):
        raise InvalidIndexProfile(f"profile {profile.name!r}: build_algo must be IVF_PQ or NN_DESCENT")
    _require_int(profile, s, "itopk_size", limit, GPU_MAX_LIMIT)  # the search keeps itopk candidates
    _require_int(profile, s, "search_width", 1, 1024)


def _check_ivf_pq(profile: IndexProfile, dim: int, limit: int) -> None:
    nlist = _require_int(profile, profile.build_params, "nlist", 1, 65536)
    m = _require_int(profile, profile.build_params, "m", 1, dim)
    if dim % m:
        raise InvalidIndexProfile(f"profile {profile.name!r}: m={m} must divide the dimension {dim}")
    _require_int(profile, profile.build_params, "nbits", 1, 16)
    _require_int(profile, profile.search_params, "nprobe", 1, nlist)


_CHECKS = {"FLAT": _check_flat, "HNSW": _check_hnsw, "IVF_FLAT": _check_ivf,
           "GPU_CAGRA": _check_cagra, "GPU_IVF_PQ": _check_ivf_pq}
_KNOWN_PARAMS = {
    "FLAT": {"build": set(), "search": set()},
    "HNSW": {"build": {"M", "efConstruction"}, "search": {"ef"}},
    "IVF_FLAT": {"build": {"nlist"}, "search": {"nprobe"}},
    "GPU_CAGRA": {"build": {"intermediate_graph_degree", "graph_degree", "build_algo", "cache_dataset_on_device"},
                  "search": {"itopk_size", "search_width", "min_iterations", "max_iterations", "team_size"}},
    "GPU_IVF_PQ": {"build": {"nlist", "m", "nbits", "cache_dataset_on_device"}, "search": {"nprobe"}},
}

PROFILES: dict[str, IndexProfile] = {p.name: p for p in (
    # Milvus Lite 3.x keeps an exact FLAT index correct at demo sizes; it drops index build
    # parameters given the pymilvus way, so an approximate index there would not be the one asked for.
    IndexProfile("embedded", "lite", "FLAT",
                 description="Milvus Lite in a local file, exact search; one process at a time (no API "
                             "beside the stream or a rebuild)"),
    IndexProfile("cpu_hnsw", "server", "HNSW", {"M": 16, "efConstruction": 200}, {"ef": 200},
                 description="Milvus server, HNSW graph: lowest latency on CPU, ~1.5x the vectors in RAM; "
                             "the default, on the local server `segue milvus start` runs"),
    IndexProfile("cpu_ivf", "server", "IVF_FLAT", {"nlist": 1024}, {"nprobe": 32},
                 description="Milvus server, IVF_FLAT: faster builds and less memory than HNSW"),
    IndexProfile("gpu_cagra", "server", "GPU_CAGRA",
                 {"intermediate_graph_degree": 64, "graph_degree": 32, "build_algo": "IVF_PQ"},
                 {"itopk_size": 128, "search_width": 4},
                 description="Milvus GPU image, CAGRA graph: highest throughput; vectors + graph in GPU memory"),
    IndexProfile("gpu_ivf_pq", "server", "GPU_IVF_PQ", {"nlist": 1024, "m": 16, "nbits": 8}, {"nprobe": 32},
                 description="Milvus GPU image, IVF-PQ: catalogues too large for CAGRA in GPU memory"),
)}


def resolve_profile(name: str, build_overrides: Mapping[str, Any] | None = None,
                    search_overrides: Mapping[str, Any] | None = None) -> IndexProfile:
    if name not in PROFILES:
        raise InvalidIndexProfile(f"unknown index profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name].with_overrides(build_overrides or {}, search_overrides or {})
