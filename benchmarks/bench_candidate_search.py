"""The serving request's Milvus calls, side by side: how the playlist's own tracks are kept out.

    python benchmarks/bench_candidate_search.py [--size 100000] [--seeds 10,50,160] [--out FILE]

Serving asks the index for the ranker's candidates without the playlist's tracks. Two ways, on the
same collection (Segue's track schema, profile `cpu_hnsw`, the local Milvus server) and queries:
- `filter`: `track_uri not in [seeds]` inside the search (today's request), limit = candidates;
- `overfetch`: no seed filter, limit = candidates + seeds, the seeds dropped from the hits after.
The share of queries where both return the very same candidates is counted (an approximate search
walks a different path with and without the filter). Beside them, the floor (a bare top-10 search)
and the second call serving makes for the co-occurrence candidates the search did not return:
their vectors and fields fetched by key and scored in Python (before), or a search restricted to
their keys that returns the scores (`TrackIndex.score`, now); the restricted search is also checked
to return every listed track, with the score the fetched vector gives.
Queries sit among their seeds as a trained query tower's do: each query's seeds are its exact
nearest tracks, so they crowd the top of the unfiltered list (the overfetch's worst case).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench_index_search import DIM, REPO, clustered_embeddings, machine_info, milvus_server
from bench_record import new_record, write_record
from latency import latency_ms

CANDIDATES = 200  # candidates.tower, the ranker's share from the towers
NEIGHBOUR_ONLY = 100  # co-occurrence candidates the search did not return
HIT_FIELDS = ["artist_uri", "explicit", "popularity", "release_year"]


def build_collection(client, catalogue: np.ndarray) -> tuple[str, list[str]]:
    from segue.indexing.profiles import PROFILES
    from segue.indexing.track_collection import VECTOR, track_row, track_schema, upsert_columns

    profile = PROFILES["cpu_hnsw"]
    name = "bench_candidates"
    client.create_collection(name, schema=track_schema(DIM))
    uris = [f"spotify:track:{i:022d}" for i in range(len(catalogue))]
    for start in range(0, len(uris), 10_000):
        rows = [track_row(u, {"artist_uri": f"spotify:artist:{i % 5000:022d}", "popularity": i % 997},
                          catalogue[i], 1, "rebuild", 1) for i, u in enumerate(uris[start:start + 10_000], start)]
        upsert_columns(client, name, rows)
    client.flush(name)
    params = client.prepare_index_params()
    params.add_index(VECTOR, index_type=profile.index_type, metric_type="IP", params=profile.build_params)
    client.create_index(name, params)
    client.load_collection(name)
    return name, uris


def main(argv: list[str] | None = None) -> int:
    from segue.indexing.profiles import PROFILES
    from segue.indexing.track_index import TrackIndex

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seeds", default="10,50,160", help="playlist lengths to exclude")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "candidate_search.json")
    args = p.parse_args(argv)
    catalogue, queries = clustered_embeddings(args.size, args.queries)
    rows, lines = [], []
    with milvus_server() as client:
        started = time.perf_counter()
        name, uris = build_collection(client, catalogue)
        print(f"{args.size:,} tracks indexed in {time.perf_counter() - started:.0f} s", flush=True)
        index = TrackIndex(client, name, PROFILES["cpu_hnsw"])
        rng = np.random.default_rng(3)

        def timed(label: str, seeds: int, fn) -> dict:
            turn = iter(range(10**9))
            ms = latency_ms(lambda: fn(next(turn) % len(queries)), repeats=len(queries))
            row = {"call": label, "seeds": seeds, "p50": ms["p50_ms"], "p99": ms["p99_ms"], "n": ms["n"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
            return row

        floor = timed("bare search, top 10", 0, lambda q: index.search(queries[q][None], 10, collection=name))
        for n in (int(s) for s in args.seeds.split(",")):
            seeds = [[uris[i] for i in np.argsort(-(catalogue @ q))[:n]] for q in queries]
            others = [[uris[i] for i in rng.choice(len(uris), NEIGHBOUR_ONLY, replace=False)] for _ in queries]

            def filtered(q):
                expression = f"track_uri not in {json.dumps(sorted(seeds[q]))}"
                return [h.track_uri for h in index.search(queries[q][None], CANDIDATES, filter=expression,
                                                          output_fields=HIT_FIELDS, collection=name)[0]]

            def overfetched(q):
                exclude = set(seeds[q])
                hits = index.search(queries[q][None], CANDIDATES + len(exclude), output_fields=HIT_FIELDS,
                                    collection=name)[0]
                return [h.track_uri for h in hits if h.track_uri not in exclude][:CANDIDATES]

            same = sum(filtered(q) == overfetched(q) for q in range(len(queries)))
            a = timed("search, seeds filtered in Milvus", n, filtered)
            b = timed("search, seeds overfetched and dropped", n, overfetched)
            c = timed(f"fetch {NEIGHBOUR_ONLY} candidates by key (vectors + fields)", n,
                      lambda q: index.entities(others[q], f"track_uri not in {json.dumps(sorted(seeds[q]))}",
                                               HIT_FIELDS, collection=name))
            d = timed(f"score {NEIGHBOUR_ONLY} candidates by a search restricted to them (TrackIndex.score)", n,
                      lambda q: index.score(queries[q][None], others[q],
                                            f"track_uri not in {json.dumps(sorted(seeds[q]))}", HIT_FIELDS,
                                            collection=name))
            # The restricted search must score every listed candidate, as the fetch by key does.
            complete = sum(
                len(index.search(queries[q][None], NEIGHBOUR_ONLY, filter=f"track_uri in {json.dumps(others[q])}",
                                 collection=name)[0]) == NEIGHBOUR_ONLY for q in range(len(queries)))
            d["every_candidate_scored"] = f"{complete}/{len(queries)}"
            gap = 0.0
            for q in range(20):
                by_key = index.entities(others[q], output_fields=HIT_FIELDS, collection=name)
                scored = index.score(queries[q][None], others[q], collection=name)
                gap = max(gap, *(abs(scored[u].score - float(h.fields["embedding"] @ queries[q]))
                                 for u, h in by_key.items()))
            d["largest_score_gap_vs_fetched_vector"] = gap
            b["same_candidates_as_filter"] = f"{same}/{len(queries)}"
            lines.append(f"| {n} | {floor['p50']:.2f} | {a['p50']:.2f} / {a['p99']:.2f} | {b['p50']:.2f} / "
                         f"{b['p99']:.2f} | {b['p50'] / a['p50']:.2f}x | {same}/{len(queries)} | "
                         f"{c['p50']:.2f} / {c['p99']:.2f} | {d['p50']:.2f} / {d['p99']:.2f} |")
    head = ["| seeds | bare top-10 p50 | filter p50 / p99 | overfetch p50 / p99 | overfetch / filter | same "
            "candidates | fetch by key p50 / p99 | restricted search p50 / p99 |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(head + lines))
    write_record({**new_record("candidate_search"), "machine": machine_info(), "tracks": args.size,
                  "candidates": CANDIDATES, "rows": rows, "table": head + lines}, args.out, echo=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
