"""`generate`: writes a synthetic MPD sample (slices, metadata, challenge set) and its report."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path
from time import perf_counter

import numpy as np
from tqdm import tqdm

from segue.challenge_metrics import evaluate_rankings
from segue.batch.synth.catalog import (
    STREAM_SLICE,
    Catalog,
    artist_metadata_rows,
    build_catalog,
    growing_days,
    track_metadata_rows,
)
from segue.batch.synth.challenge import (
    ChallengeCase,
    oracle_rankings,
    popularity_rankings,
    sample_challenge,
    write_challenge,
)
from segue.batch.synth.playlists import (
    PlaylistSampler,
    TrackEntryFormat,
    playlist_fields,
    playlist_json,
)
from segue.batch.synth.profiles import Profile, profile_named
from segue.batch.synth.shape import SHAPE_KEYS, ShapeTally

PLAYLIST_GROWTH = 0.45  # per year: later years hold more playlists, as in the MPD
_LICENSE = "Synthetic data made by Segue's generator; no real users or tracks. Apache-2.0."


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *path])))


def _years(days: np.ndarray) -> np.ndarray:
    return days.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970


def _write_jsonl(path: Path, chunks: Iterable[list[dict]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for rows in chunks:
            f.writelines(json.dumps(row, separators=(",", ":")) + "\n" for row in rows)


def _write_slices(out_dir: Path, catalog: Catalog, sampler: PlaylistSampler,
                  entries: TrackEntryFormat, playlists: int, slice_size: int, info: dict,
                  progress: bool, named: bool) -> tuple[np.ndarray, Counter, ShapeTally]:
    """Writes the slice files one by one; returns per-track entry counts, playlists per year and
    the playlists' shape."""
    counts = np.zeros(catalog.n_tracks, dtype=np.int64)
    years: Counter = Counter()
    shape = ShapeTally()
    with tqdm(total=playlists, unit="playlist", disable=not progress, desc="slices") as bar:
        for index, lo in enumerate(range(0, playlists, slice_size)):
            hi = min(lo + slice_size, playlists)
            # Each slice has its own stream, so slices can be made independently.
            rng = _rng(catalog.seed, STREAM_SLICE, index)
            days = growing_days(rng, catalog.first_day, catalog.last_day, hi - lo,
                                PLAYLIST_GROWTH)
            sampled = []
            for pid, day in zip(range(lo, hi), days.tolist()):
                playlist = sampler.sample(rng, day)
                sampled.append((playlist_fields(rng, catalog, pid, playlist, named),
                                playlist.tracks))
                shape.add(catalog.track_artist[playlist.tracks])
            drawn = np.concatenate([tracks for _, tracks in sampled])
            entries.prepare(drawn)
            records = [playlist_json(fields, entries.entries(tracks)) for fields, tracks in sampled]
            counts += np.bincount(drawn, minlength=catalog.n_tracks)
            years.update(_years(days).tolist())
            head = json.dumps({"info": {**info, "slice": f"{lo}-{hi - 1}"}},
                              ensure_ascii=False, separators=(",", ":"))[:-1]
            (out_dir / f"mpd.slice.{lo}-{hi - 1}.json").write_text(
                f'{head},"playlists":[{",".join(records)}]}}', encoding="utf-8"
            )
            bar.update(hi - lo)
    return counts, years, shape


def _tail_share(counts: np.ndarray, top_share: float) -> float:
    seen = np.sort(counts[counts > 0])[::-1]
    top = max(1, int(round(top_share * len(seen))))
    return float(seen[:top].sum() / seen.sum())


def _statistics(catalog: Catalog, counts: np.ndarray, years: Counter, shape: ShapeTally,
                cases: list[ChallengeCase]) -> dict:
    seen = counts > 0
    holdouts = np.concatenate([c.holdouts for c in cases]) if cases else np.empty(0, np.int64)
    new_track = catalog.track_day > catalog.last_day
    return {
        "playlists": int(sum(years.values())),
        "track_entries": int(counts.sum()),
        "unique_tracks": int(seen.sum()),
        "unique_albums": len(np.unique(catalog.track_album[seen])),
        "unique_artists": len(np.unique(catalog.track_artist[seen])),
        "catalog_tracks": catalog.n_tracks,
        "catalog_albums": catalog.n_albums,
        "catalog_artists": catalog.n_artists,
        "catalog_tracks_released_in_challenge_period": int(new_track.sum()),
        "challenge_playlists": len(cases),
        "holdout_entries": len(holdouts),
        "holdout_share_unseen_in_slices": float(np.mean(~seen[holdouts])) if len(holdouts) else 0.0,
        "holdout_share_released_in_challenge_period":
            float(np.mean(new_track[holdouts])) if len(holdouts) else 0.0,
        "entry_share_top_1pct_tracks": _tail_share(counts, 0.01),
        "entry_share_top_10pct_tracks": _tail_share(counts, 0.10),
        "track_share_seen_once": float(np.mean(counts[seen] == 1)),
        **shape.statistics(),
        "playlists_per_year": {str(y): years[y] for y in sorted(years)},
    }


def _yardsticks(cases: list[ChallengeCase], sampler: PlaylistSampler, counts: np.ndarray) -> dict:
    holdouts = {c.pid: c.holdouts.tolist() for c in cases}
    categories = {c.pid: c.category.name for c in cases}
    return {
        "popularity": evaluate_rankings(popularity_rankings(cases, counts), holdouts, categories),
        "oracle": evaluate_rankings(oracle_rankings(cases, sampler), holdouts, categories),
    }


def _markdown(report: dict) -> str:
    s = report["statistics"]
    lines = ["# Synthetic MPD sample", "",
             "Parameters: " + ", ".join(f"{k}={v}" for k, v in report["parameters"].items()), "",
             "## Counts", "", "| statistic | value |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v:.4g} |" if isinstance(v, float)
              else f"| {k.replace('_', ' ')} | {v} |"
              for k, v in s.items() if k != "playlists_per_year" and k not in SHAPE_KEYS]
    lines += ["", f"## Shape (profile {report['parameters']['profile']})", "",
              "The statistics to hold against a real dataset's: playlist lengths, popularity "
              "head and tail, artist runs (pooled over consecutive pairs) and artist variety "
              "(averaged over playlists).", "", "| statistic | value |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {s[k]:.4g} |" for k in SHAPE_KEYS if k in s]
    lines += ["", "## Playlists per year", "", "| year | playlists |", "|---|---|"]
    lines += [f"| {y} | {n} |" for y, n in s["playlists_per_year"].items()]
    lines += ["", "## Yardsticks on the challenge set", "",
              "Popularity: most-played tracks of the slices. Oracle: the generator's own draw "
              "probabilities for the playlist's true tastes and date (without the album and "
              "artist runs). Seeds excluded, 500 ranked.",
              ""]
    for name, result in report["yardsticks"].items():
        lines += [f"### {name}", "", "| category | playlists | R-precision | NDCG | clicks | "
                  "Recall@500 |", "|---|---|---|---|---|---|"]
        rows = {"overall": result["overall"], **result["by_category"]}
        lines += [f"| {cat} | {m['playlists']} | {m['r_precision']:.4f} | {m['ndcg']:.4f} | "
                  f"{m['clicks']:.3f} | {m['recall@500']:.4f} |" for cat, m in rows.items()]
        lines.append("")
    lines += ["## Timings", ""]
    lines += [f"- {k.removesuffix('_s')}: {v:.2f} s" if k.endswith("_s") else f"- {k}: {v:.0f}"
              for k, v in report["timings"].items()]
    return "\n".join(lines) + "\n"


def generate(out_dir: Path, *, playlists: int, seed: int, tastes: int, start: date, end: date,
             challenge_playlists: int, slice_size: int = 1000, progress: bool = True,
             profile: str = "demo") -> dict:
    """Writes a synthetic MPD sample into `out_dir` and returns its summary.

    Writes `mpd.slice.*.json`, `metadata/tracks.jsonl`, `metadata/artists.jsonl` (not for the
    `ids_only` profile), `challenge_set.json`, `challenge_holdout.json` and
    `generator_report.{md,json}`. The same arguments always give byte-identical slices, metadata
    and challenge files. `profile` names the kind of source imitated (see `profiles`).
    """
    kind: Profile = profile_named(profile)
    if min(playlists, slice_size) < 1 or min(seed, challenge_playlists) < 0 or tastes < 2:
        raise ValueError("need playlists >= 1, slice_size >= 1, seed >= 0, challenge_playlists "
                         f">= 0 and tastes >= 2; got playlists={playlists}, slice_size="
                         f"{slice_size}, seed={seed}, challenge_playlists={challenge_playlists}, "
                         f"tastes={tastes}")
    if end <= start:
        raise ValueError(f"`end` must be after `start`; got start={start}, end={end}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = {}
    clock = perf_counter()

    catalog = build_catalog(seed, tastes, playlists, start, end, kind.catalog)
    sampler = PlaylistSampler(catalog, kind.playlists)
    entries = TrackEntryFormat(catalog, named=kind.named)
    timings["catalog_s"], clock = perf_counter() - clock, perf_counter()

    if kind.metadata:
        (out_dir / "metadata").mkdir(exist_ok=True)
        _write_jsonl(out_dir / "metadata" / "tracks.jsonl", track_metadata_rows(catalog))
        _write_jsonl(out_dir / "metadata" / "artists.jsonl", [artist_metadata_rows(catalog)])
    timings["metadata_s"], clock = perf_counter() - clock, perf_counter()

    info = {"generated_on": f"{end.isoformat()} 00:00:00", "version": "v1",
            "description": f"Synthetic MPD sample from Segue's generator (seed {seed}, "
                           f"{tastes} tastes, {start.isoformat()} to {end.isoformat()})",
            "license": _LICENSE}
    counts, years, playlist_shape = _write_slices(out_dir, catalog, sampler, entries, playlists,
                                                  slice_size, info, progress, kind.named)
    timings["slices_s"], clock = perf_counter() - clock, perf_counter()

    cases = sample_challenge(catalog, sampler, challenge_playlists, first_pid=playlists,
                             named=kind.named)
    horizon = end + timedelta(days=catalog.horizon_day - catalog.last_day)
    write_challenge(out_dir, cases, catalog, entries, f"{horizon.isoformat()} 00:00:00")
    timings["challenge_s"], clock = perf_counter() - clock, perf_counter()

    yardsticks = _yardsticks(cases, sampler, counts) if cases else {}
    timings["yardsticks_s"] = perf_counter() - clock
    timings["total_s"] = sum(timings.values())
    timings["playlists_per_s"] = playlists / timings["slices_s"]

    report = {
        "parameters": {"profile": profile, "playlists": playlists, "seed": seed, "tastes": tastes,
                       "start": start.isoformat(), "end": end.isoformat(),
                       "challenge_playlists": challenge_playlists, "slice_size": slice_size},
        "statistics": _statistics(catalog, counts, years, playlist_shape, cases),
        "yardsticks": yardsticks,
        "timings": timings,
    }
    (out_dir / "generator_report.json").write_text(json.dumps(report, indent=2) + "\n",
                                                   encoding="utf-8")
    (out_dir / "generator_report.md").write_text(_markdown(report), encoding="utf-8")
    return report
