"""The `segue` command line. Each stage adds a group; options override `segue.yaml` and `SEGUE_*`."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click

from segue import __version__
from segue.cli_failures import CONFIGURATION, UNREACHABLE, known_failure
from segue.logs import configure_logging
from segue.settings import SegueSettings, load_settings
from segue.vocabulary import PLAYLIST_KEY, PLAYLIST_SERVICE, TRACK_KEY, TRACK_SERVICE


# `segue --help` lists the commands in the order the pipeline runs them.
PIPELINE_ORDER = ("demo", "data", "batch", "features", "train", "evaluate", "models", "milvus", "index", "kafka", "stream",
                  "serve", "config")


class SegueGroup(click.Group):
    """Ends known failures in one line and their exit code (`segue.cli_failures`); `--debug` re-raises.
    Lists its commands in pipeline order, with whole summaries."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: PIPELINE_ORDER.index(n) if n in PIPELINE_ORDER else len(PIPELINE_ORDER))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, (self.get_command(ctx, name).help or "").split("\n\n")[0].replace("\n", " "))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands (in pipeline order)"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as e:
            known = None if ctx.meta.get("segue.debug") else known_failure(e, ctx.obj)
            if known is None:
                raise
            click.echo(f"Error: {known.message}", err=True)
            ctx.exit(known.exit_code)


@click.group(cls=SegueGroup)
@click.version_option(__version__, prog_name="segue")
@click.option("--debug", is_flag=True, help="Show the traceback of a known failure instead of one line.")
@click.option("--config", "config_file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Settings file (default: $SEGUE_CONFIG, else ./segue.yaml).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
              help="Log lines as text or as JSON objects (default: settings).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, config_file: Path | None, log_format: str | None) -> None:
    """Segue: two-tower retrieval for playlist continuation."""
    ctx.meta["segue.debug"] = debug
    ctx.meta["segue.config_file"] = config_file
    try:
        settings = load_settings(config_file)
    except Exception as e:  # a bad config file or variable: say which, don't show a traceback
        if debug:
            raise
        click.echo(f"Error: invalid configuration: {e}", err=True)
        ctx.exit(CONFIGURATION)
    configure_logging(log_format or settings.log.format, settings.log.level)
    ctx.obj = settings


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@click.option("--sources", is_flag=True, help="One line per setting with where its value came from.")
@click.pass_context
def config_show(ctx: click.Context, sources: bool) -> None:
    """Print the effective settings (defaults, segue.yaml and SEGUE_* applied)."""
    from segue.settings import setting_sources

    settings = ctx.obj
    document = settings.model_dump(mode="json")
    if not sources:
        click.echo(json.dumps(document, indent=2))
        return
    for name, source in setting_sources(settings, config_file=ctx.meta["segue.config_file"]).items():
        section, key = name.split(".")
        click.echo(f"{name} = {json.dumps(document[section][key])}  ({source})")


@config.command("docs")
@click.option("--write", "folder", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Write configuration.md and commands.md into this folder instead of printing them.")
def config_docs(folder: Path | None) -> None:
    """The configuration and command references, generated from the settings and this CLI (and,
    in a source checkout, the module map of architecture.md)."""
    from segue.reference_docs import commands_reference, settings_reference, with_module_map

    pages = {"configuration.md": settings_reference(), "commands.md": commands_reference(cli)}
    for name, text in pages.items():
        if folder is None:
            click.echo(text)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text + "\n")
            click.echo(f"written: {folder / name}")
    architecture = folder / "architecture.md" if folder is not None else None
    if architecture is not None and architecture.is_file():  # a source checkout: its module map too
        architecture.write_text(with_module_map(architecture.read_text(), folder.resolve().parent))
        click.echo(f"written: {architecture} (module map)")


@cli.group()
def data() -> None:
    """MPD data: generate a sample, validate slices."""


@data.command("generate")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default: paths.mpd_dir).")
@click.option("--playlists", type=click.IntRange(min=100), default=None)
@click.option("--seed", type=int, default=None)
@click.option("--tastes", type=click.IntRange(min=4), default=None)
@click.option("--challenge", "challenge_playlists", type=click.IntRange(min=10), default=None,
              help="Held-out challenge playlists (ten categories).")
@click.option("--profile", type=click.Choice(["demo", "ids_only"]), default=None,
              help="demo: MPD-like with names and metadata; ids_only: ids only, long radio-like "
                   "playlists (default: settings).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def data_generate(settings: SegueSettings, out: Path | None, quiet: bool, **overrides: int | str | None) -> None:
    """Generate MPD-shaped slices, track/artist metadata, a challenge set and a yardstick report."""
    from segue.batch.synth import generate

    gen = settings.generate.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    out = out or settings.paths.mpd_dir
    report = generate(out, playlists=gen.playlists, seed=gen.seed, tastes=gen.tastes,
                      start=gen.start, end=gen.end, challenge_playlists=gen.challenge_playlists,
                      slice_size=gen.slice_size, progress=not quiet, profile=gen.profile)
    stats = report["statistics"]
    click.echo(json.dumps({
        "out": str(out), "report": str(out / "generator_report.md"),
        **{k: stats[k] for k in ("playlists", "track_entries", "unique_tracks", "unique_artists",
                                 "challenge_playlists", "holdout_share_unseen_in_slices")},
        "yardsticks": {name: {k: round(v, 4) for k, v in r["overall"].items()}
                       for name, r in report["yardsticks"].items()},
        "playlists_per_s": round(report["timings"]["playlists_per_s"]),
    }, indent=2))


@data.command("validate")
@click.argument("folder", type=click.Path(path_type=Path), required=False)
@click.pass_obj
def data_validate(settings: SegueSettings, folder: Path | None) -> None:
    """Strictly read every slice (and challenge_set.json if present) of FOLDER."""
    from segue.batch.mpd import MpdFormatError, read_challenge_set, read_playlists

    folder = folder or settings.paths.mpd_dir
    try:
        playlists = entries = 0
        for playlist in read_playlists(folder):
            playlists += 1
            entries += len(playlist["tracks"])
        challenge = folder / "challenge_set.json"
        n_challenge = sum(1 for _ in read_challenge_set(challenge)) if challenge.is_file() else 0
    except (MpdFormatError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({"folder": str(folder), "playlists": playlists, "track_entries": entries,
                           "challenge_playlists": n_challenge}, indent=2))


@cli.group()
def batch() -> None:
    """Spark batch jobs (the same as `spark-submit batch/<job>.py`)."""


def _add_spark_job(name: str, module: str, summary: str) -> None:
    """A `segue batch` command that runs a spark-submit job in-process with the same arguments."""
    import importlib

    @click.pass_context
    def run(ctx: click.Context) -> None:
        sys.exit(importlib.import_module(f"segue.batch.{module}").main(ctx.args, ctx.obj))

    command = batch.command(name, context_settings=_PASS_THROUGH,
                            help=f"{summary} (see `segue batch {name} --help`).")(run)
    command.job_module = f"segue.batch.{module}"  # the reference docs print the job's own options


_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
_add_spark_job("ingest", "ingest_mpd", "Ingest MPD slices and metadata into Parquet tables")
_add_spark_job("features", "build_features", "Build the feature tables Feast reads")
_add_spark_job("examples", "build_examples", "Build point-in-time training examples")
_add_spark_job("neighbours", "build_neighbours", "Each track's top co-occurring tracks over the training window, for Feast")


@cli.group()
def features() -> None:
    """The Feast feature store: apply definitions, materialize, look up online."""


_PROFILE = click.option("--profile", type=click.Choice(["local", "redis", "spark"]), default=None,
                        help="Feature store profile (default: features.profile).")
# Outside the `features` group a bare --profile would read as the index profile: say which.
_FEATURE_PROFILE = click.option("--feature-profile", "profile", type=click.Choice(["local", "redis", "spark"]),
                                default=None, help="Feature store profile (default: features.profile); the index "
                                                   "profile is `index.profile`.")


@features.command("apply")
@_PROFILE
@click.pass_obj
def features_apply(settings: SegueSettings, profile: str | None) -> None:
    """`feast apply` for a profile, then check every view against its table."""
    from segue.features.source_check import FeatureSourceError, check_feature_sources
    from segue.features.store import apply_definitions, open_store

    click.echo(apply_definitions(settings, profile))
    try:
        checked = check_feature_sources(open_store(settings, profile))
    except FeatureSourceError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"sources match their tables: {', '.join(checked)}")


@features.command("materialize")
@_PROFILE
@click.option("--end", type=click.DateTime(), default=None, help="Materialize up to this UTC time (default: now).")
@click.option("--full", is_flag=True,
              help="Rewrite the whole history (after rebuilt feature tables or a new feature in a view).")
@click.pass_obj
def features_materialize(settings: SegueSettings, profile: str | None, end, full: bool) -> None:
    """Contracts on the feature tables, then each view's latest rows into the online store (nothing if a
    rule fails). Spark picks the rows; they are written through Feast in batches, in bounded memory."""
    from datetime import timezone

    from segue.batch.contracts import ContractViolation
    from segue.batch.spark_session import build_spark
    from segue.features.materialize import materialize
    from segue.features.source_check import FeatureSourceError, RegistryNotApplied
    from segue.features.store import open_store

    spark = build_spark("segue-materialize", settings.spark)
    try:
        result = materialize(open_store(settings, profile), spark,
                             end.replace(tzinfo=timezone.utc) if end else None, full=full,
                             staging_dir=Path(settings.paths.data_dir) / "staging")
    except RegistryNotApplied:
        raise  # the error boundary's: its own exit code
    except (ContractViolation, FeatureSourceError) as e:
        raise click.ClickException(f"nothing materialized: {e}") from None
    click.echo(json.dumps({"end": result["end"], "views": result["views"], "rows": result["rows"]}, indent=2))


@features.command("get")
@_PROFILE
@click.argument("service", type=click.Choice([PLAYLIST_SERVICE, TRACK_SERVICE]))
@click.argument("keys", nargs=-1, required=True)
@click.pass_obj
def features_get(settings: SegueSettings, profile: str | None, service: str, keys: tuple[str, ...]) -> None:
    """Online features of playlists (pids) or tracks (URIs); unknown ones are marked missing."""
    from segue.features.online import lookup
    from segue.features.store import open_store

    key_name, parse = (PLAYLIST_KEY, int) if service == PLAYLIST_SERVICE else (TRACK_KEY, str)
    rows = lookup(open_store(settings, profile), service, key_name, [parse(k) for k in keys])
    click.echo(json.dumps([{key_name: r.key, "found": r.found, "features": r.features} for r in rows],
                          indent=2, default=str))


def with_training_overrides(settings: SegueSettings, pairs: tuple[str, ...]) -> SegueSettings:
    """Applies `--set key=value` pairs (values in YAML syntax) to the training settings."""
    import yaml
    from pydantic import ValidationError

    from segue.settings import TrainingSettings

    updates = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in TrainingSettings.model_fields:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE with KEY one of "
                                     f"{', '.join(TrainingSettings.model_fields)}", param_hint="--set")
        updates[key] = yaml.safe_load(value)
    try:
        training = TrainingSettings.model_validate({**settings.training.model_dump(), **updates})
    except ValidationError as e:
        raise click.BadParameter(str(e), param_hint="--set") from None
    return settings.model_copy(update={"training": training})


@cli.command("train")
@click.option("--examples", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Training examples (default: paths.examples_dir).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Models folder; the version goes in a new subfolder (default: paths.models_dir).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a training setting, e.g. --set epochs=5 --set layers=[256,128].")
@_FEATURE_PROFILE
@click.pass_obj
def train_command(settings: SegueSettings, examples: Path | None, out: Path | None,
                  overrides: tuple[str, ...], profile: str | None) -> None:
    """Train the two towers on the examples; export them and a ScaNN retrieval model."""
    from segue.features.store import open_store
    from segue.training.callbacks import TrainingCollapsed
    from segue.training.train import train

    settings = with_training_overrides(settings, overrides)
    try:
        result = train(settings, open_store(settings, profile), examples_dir=examples, models_dir=out)
    except (TrainingCollapsed, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    m = result.manifest
    click.echo(json.dumps({"model": str(result.path), "metrics": m["metrics"], "speed": m["speed"],
                           "data": m["data"]}, indent=2))


@cli.command("evaluate")
@click.option("--model", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="A model version folder (default: <paths.models_dir>/latest).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Report folder (default: <model>/evaluation).")
@_FEATURE_PROFILE
@click.pass_obj
def evaluate_command(settings: SegueSettings, model: Path | None, out: Path | None, profile: str | None) -> None:
    """Score the model and the baselines on the held-out playlists; print and write the report."""
    from segue.features.store import open_store
    from segue.training.evaluate import evaluate
    from segue.training.report import category_table, comparisons_table, metrics_table

    from segue.training.model_versions import LATEST, ModelVersions

    version = ModelVersions(settings.paths.models_dir).resolve(model or LATEST)
    report = evaluate(settings, open_store(settings, profile), version.path, out)
    click.echo(f"\n{metrics_table(report)}\n\n{comparisons_table(report)}\n\n"
               f"Recall@100 by category\n\n{category_table(report)}\n")
    click.echo(f"report: {Path(out or Path(report['model_dir']) / 'evaluation')}/metrics.{{json,md}}, recall_at_k.png")


@cli.group()
def models() -> None:
    """Trained model versions: list, show, promote one to `latest`, roll `latest` back."""


@models.command("list")
@click.pass_obj
def models_list(settings: SegueSettings) -> None:
    """Every version, oldest first, with its validation Recall@100; `*` marks `latest`."""
    from segue.training.model_versions import ModelNotFound, ModelVersions

    versions = ModelVersions(settings.paths.models_dir)
    try:
        latest = versions.resolve().name
    except ModelNotFound:
        latest = None
    for name in versions.names():
        manifest = versions.resolve(name).manifest
        recall = manifest.get("metrics", {}).get("val_recall_at_100")
        click.echo(f"{'*' if name == latest else ' '} {name}  created {manifest.get('created', '?')[:19]}  "
                   f"val Recall@100 {recall}  ranker {'yes' if versions.resolve(name).has_ranker else 'no'}")


@models.command("show")
@click.argument("version", default="latest")
@click.pass_obj
def models_show(settings: SegueSettings, version: str) -> None:
    """A version's manifest: data, settings, metrics, speed, ranker (default: latest)."""
    from segue.training.model_versions import ModelVersions

    manifest = ModelVersions(settings.paths.models_dir).resolve(version).manifest
    click.echo(json.dumps({k: v for k, v in manifest.items() if k not in ("inputs", "history")}, indent=2,
                          default=str))


@models.command("promote")
@click.argument("version")
@click.pass_obj
def models_promote(settings: SegueSettings, version: str) -> None:
    """Point `latest` at VERSION (what evaluate and the next rebuild use). Serving follows the index:
    run `segue index rebuild` to serve it, or `segue index rollback` for the previous build."""
    from segue.training.model_versions import ModelVersions

    ModelVersions(settings.paths.models_dir).publish_latest(version)
    click.echo(f"latest -> {version}")


@models.command("rollback")
@click.pass_obj
def models_rollback(settings: SegueSettings) -> None:
    """Point `latest` at the version trained before the one it names now."""
    from segue.training.model_versions import ModelVersions

    versions = ModelVersions(settings.paths.models_dir)
    current, names = versions.resolve().name, versions.names()
    earlier = names[:names.index(current)] if current in names else []
    if not earlier:
        raise click.ClickException(f"no version older than {current} in {settings.paths.models_dir}")
    versions.publish_latest(earlier[-1])
    click.echo(f"latest -> {earlier[-1]} (was {current})")


@cli.group()
def milvus() -> None:
    """A local Milvus server (the `milvus` package's standalone binary) at index.uri, for the server profiles."""


_MILVUS_DIR = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                           help="The server's data, logs and pid file (default: <paths.index_dir>/milvus-server).")


def _local_milvus(settings: SegueSettings, data_dir: Path | None):
    from segue.indexing.milvus_server import MilvusServerError, local_server

    try:
        return local_server(settings.index.uri, data_dir or Path(settings.paths.index_dir) / "milvus-server")
    except MilvusServerError as e:
        raise click.ClickException(str(e)) from None


@milvus.command("start")
@_MILVUS_DIR
@click.pass_obj
def milvus_start(settings: SegueSettings, data_dir: Path | None) -> None:
    """Start the server in the background on index.uri's port (if nothing answers there) and print its URI."""
    from segue.indexing.milvus_server import MilvusServerError

    server = _local_milvus(settings, data_dir)
    try:
        started = server.ensure_started()
    except MilvusServerError as e:
        raise click.ClickException(str(e)) from None
    click.echo(server.uri if started else f"{server.uri} (already answering; nothing started)")


@milvus.command("stop")
@_MILVUS_DIR
@click.pass_obj
def milvus_stop(settings: SegueSettings, data_dir: Path | None) -> None:
    """Stop the server started on that data folder."""
    _local_milvus(settings, data_dir).stop()


@milvus.command("status")
@_MILVUS_DIR
@click.pass_obj
def milvus_status(settings: SegueSettings, data_dir: Path | None) -> None:
    """Say whether the server runs (exit code 1 when nothing answers on index.uri)."""
    server = _local_milvus(settings, data_dir)
    pid = server.running_pid()
    if pid is not None:
        click.echo(f"running: {server.uri} (pid {pid}, data {server.data_dir})")
    elif server.answers():
        click.echo(f"answering: {server.uri} (a server not started from {server.data_dir})")
    else:
        click.echo(f"not running: nothing answers on {server.uri}; start it with `segue milvus start`")
        raise SystemExit(1)


@cli.group()
def index() -> None:
    """The Milvus index of track embeddings: nightly rebuild, rollback, status, neighbours."""


@index.command("rebuild")
@click.option("--model", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="A model version folder (default: <paths.models_dir>/latest).")
@click.option("--force", is_flag=True, help="Swap even if the build holds fewer rows than "
                                            "`index.min_rows_share` of the live collection's.")
@_FEATURE_PROFILE
@click.pass_obj
def index_rebuild(settings: SegueSettings, model: Path | None, force: bool, profile: str | None) -> None:
    """Embed every track into a new collection, validate it, swap the alias (the nightly job)."""
    from segue.features.store import open_store
    from segue.indexing.profiles import InvalidIndexProfile
    from segue.indexing.rebuild import RebuildFailed, rebuild_index
    from segue.training.model_versions import ModelNotFound

    # SIGTERM (a scheduler's stop, `kill`) unwinds like Ctrl-C, so the build in progress is dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report = rebuild_index(settings, open_store(settings, profile), model, force=force)
    except ModelNotFound:
        raise  # the error boundary's: its own exit code
    except (RebuildFailed, InvalidIndexProfile, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(report.as_dict(), indent=2, default=str))


@index.command("rollback")
@click.pass_obj
def index_rollback(settings: SegueSettings) -> None:
    """Point the alias back at the previous collection."""
    from segue.indexing.rebuild import rollback_index

    try:
        before, after = rollback_index(settings)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({"alias": settings.index.alias, "from": before, "to": after}))


@index.command("status")
@click.pass_obj
def index_status(settings: SegueSettings) -> None:
    """The alias, the collection behind it and every kept build."""
    from segue.indexing.milvus_connection import open_client
    from segue.indexing.track_collection import builds
    from segue.indexing.track_collection import live_collection

    client = open_client(settings)
    live = live_collection(client, settings.index.alias)
    kept = [{"collection": b.name, "model_version": b.model_version, "state": b.state,
             "serving": b.name == live, "validation_ok": b.validation.get("ok")}
            for b in builds(client, settings.index.alias)]
    click.echo(json.dumps({"alias": settings.index.alias, "serving": live, "profile": settings.index.profile,
                           "builds": kept}, indent=2))


@index.command("neighbours")
@click.argument("track_uri")
@click.option("-k", "limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.pass_obj
def index_neighbours(settings: SegueSettings, track_uri: str, limit: int) -> None:
    """The tracks nearest to TRACK_URI in the serving index."""
    from segue.indexing.milvus_connection import index_profile, open_client
    from segue.indexing.track_index import TrackIndex

    index = TrackIndex(open_client(settings), settings.index.alias, index_profile(settings))
    try:
        hits = index.nearest_tracks(track_uri, limit, output_fields=["artist_uri", "popularity"])
    except (KeyError, LookupError) as e:
        raise click.ClickException(str(e)) from None
    for h in hits:
        click.echo(f"{h.score:7.4f}  {h.track_uri}  {json.dumps(h.fields)}")


@cli.group()
def kafka() -> None:
    """A local Apache Kafka broker (KRaft, Apache's jars fetched once by Maven), on 127.0.0.1."""


_KAFKA_DIR = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                          help="The broker's data, log and pid file (default: <paths.data_dir>/kafka).")


@kafka.command("start")
@_KAFKA_DIR
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port to listen on (default: the port of kafka.bootstrap_servers, 127.0.0.1:9092).")
@click.pass_obj
def kafka_start(settings: SegueSettings, data_dir: Path | None, port: int | None) -> None:
    """Start the broker in the background and print its bootstrap address."""
    from segue.streaming.kafka_broker import KafkaBroker, KafkaBrokerError
    from segue.streaming.kafka_jars import KafkaSetupError

    if port is None:
        host, _, configured = settings.kafka.bootstrap_servers.rpartition(":")
        if host not in ("127.0.0.1", "localhost") or not configured.isdigit():
            raise click.ClickException(
                f"kafka.bootstrap_servers is {settings.kafka.bootstrap_servers}, not one broker on this machine; "
                "start a local one with --port N and set kafka.bootstrap_servers to 127.0.0.1:N")
        port = int(configured)
    broker = KafkaBroker(data_dir or Path(settings.paths.data_dir) / "kafka", port=port)
    try:
        broker.start()
    except (KafkaSetupError, KafkaBrokerError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(broker.bootstrap_servers)


@kafka.command("stop")
@_KAFKA_DIR
@click.pass_obj
def kafka_stop(settings: SegueSettings, data_dir: Path | None) -> None:
    """Stop the broker started on that data folder."""
    from segue.streaming.kafka_broker import KafkaBroker, KafkaBrokerError

    try:
        KafkaBroker(data_dir or Path(settings.paths.data_dir) / "kafka").stop()
    except KafkaBrokerError as e:
        raise click.ClickException(str(e)) from None


@cli.group()
def stream() -> None:
    """New tracks and playlist edits: publish events to Kafka, apply them with the consumer daemon or
    the Beam pipeline."""


@stream.command("publish")
@click.option("--file", "path", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="JSON lines: whole events, or bare track objects (sent as new events).")
@click.option("--edits", "edits_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="JSON lines of playlist edits (whole events, or bare {pid, added_track_uris, removed_track_uris, "
                   "name}), sent to `stream.playlist_topic`.")
@click.option("--generated", type=click.IntRange(min=1), default=None,
              help="This many of the generator's future tracks (released after its slices; `generate.*`).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None, help="Events per second (default: as fast as possible).")
@click.pass_obj
def stream_publish(settings: SegueSettings, path: Path | None, edits_path: Path | None, generated: int | None,
                   rate: float | None) -> None:
    """Send track events to `stream.topic` (keyed by track URI) or playlist edits to
    `stream.playlist_topic` (keyed by pid); every line is validated first."""
    from kafka.errors import KafkaError

    from segue.streaming.events import PlaylistEditEvent, new_event
    from segue.streaming.kafka_clients import ensure_topics, event_producer
    from segue.streaming.publish import EventFileError, publish_events, read_event_file

    if sum(x is not None for x in (path, edits_path, generated)) != 1:
        raise click.UsageError("give exactly one of --file, --edits or --generated")
    topic = settings.stream.topic if edits_path is None else settings.stream.playlist_topic
    try:
        if path is not None:
            events = read_event_file(path, max_ahead_s=settings.stream.max_event_ahead_s)
        elif edits_path is not None:
            events = read_event_file(edits_path, max_ahead_s=settings.stream.max_event_ahead_s, kind=PlaylistEditEvent)
        else:
            from segue.batch.synth.new_tracks import future_tracks

            g = settings.generate
            events = (new_event(t) for t in future_tracks(g.seed, g.tastes, g.playlists, g.start, g.end, generated))
        ensure_topics(settings)
        producer = event_producer(settings)
        report = publish_events(producer, topic, events, rate)
        producer.close()
    except EventFileError as e:
        raise click.ClickException(str(e)) from None
    except KafkaError as e:
        failure = click.ClickException(f"Kafka at {settings.kafka.bootstrap_servers}: {e}; is the broker up "
                                       "(`segue kafka start`) and `kafka.*` right?")
        failure.exit_code = UNREACHABLE
        raise failure from None
    click.echo(json.dumps({"topic": topic, "sent": report.sent,
                           "events_per_s": round(report.sent / max(report.seconds, 1e-9))}))


@stream.command("run")
@click.option("--until-idle", type=click.FloatRange(min=0), default=None,
              help="Exit after this many seconds without events (default: run until SIGTERM/SIGINT).")
@click.pass_obj
def stream_run(settings: SegueSettings, until_idle: float | None) -> None:
    """The consumer daemon: validate; tracks pushed to Feast, embedded and upserted into Milvus;
    playlist edits applied to the playlists' Feast features; then commit."""
    import signal
    import threading

    from segue.process_heap import freeze_startup_heap
    from segue.streaming.consumer_daemon import open_daemon
    from segue.streaming.daemon_metrics import serve_health

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    daemon = open_daemon(settings, stop)
    if settings.stream.freeze_heap:
        freeze_startup_heap()
    server = None
    if settings.stream.health_port is not None:
        server = serve_health(daemon.metrics, daemon.health, settings.stream.health_port,
                              settings.stream.health_host)
        click.echo(f"health: http://127.0.0.1:{server.server_port}/healthz  metrics: /metrics", err=True)
    report = daemon.run(until_idle)
    if server:
        server.shutdown()
    click.echo(json.dumps({"batches": report.batches, "events": report.events, "indexed": report.sink.indexed,
                           "edited": report.sink.edited, "superseded": report.sink.superseded, "dead_letters": report.dead_letters,
                           "interrupted": report.interrupted}))


@stream.command("beam")
@click.option("--local-flink", is_flag=True,
              help="Start a local Flink job server (Java; its jars are fetched once by Maven) and run there.")
@click.pass_obj
def stream_beam(settings: SegueSettings, local_flink: bool) -> None:
    """The daemon's steps as a streaming Beam pipeline, until SIGTERM/SIGINT.

    Without --local-flink it runs on `stream.beam_runner` with `stream.beam_options`."""
    import signal
    import threading

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.runner import PipelineState

    from segue.streaming.beam_pipeline import ReadStreamMessages, run_stream_pipeline, stream_pipeline_options
    from segue.streaming.flink_job_server import FlinkJobServer
    from segue.streaming.kafka_clients import ensure_topics

    ensure_topics(settings)
    if not local_flink:
        run_stream_pipeline(settings, stream_pipeline_options(settings), ReadStreamMessages(settings))
        return
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with FlinkJobServer(Path(settings.paths.data_dir) / "flink") as server:
        options = PipelineOptions(server.pipeline_options() + ["--streaming"])
        result = run_stream_pipeline(settings, options, ReadStreamMessages(settings, server.expansion_service),
                                     wait=False)
        click.echo(f"running on the local Flink job server (log: {server.log_file}); Ctrl-C stops it", err=True)
        while not stop.wait(1) and not PipelineState.is_terminal(result.state):
            pass
    click.echo(json.dumps({"state": str(result.state)}))


@cli.command("serve")
@click.option("--host", default=None, help="Interface to listen on (default: serve.host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default: serve.port).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="uvicorn worker processes.")
@_FEATURE_PROFILE
@click.pass_obj
def serve_command(settings: SegueSettings, host: str | None, port: int | None, workers: int | None,
                  profile: str | None) -> None:
    """The recommendation API (OpenAPI docs at /docs)."""
    from segue.serving.api_server import ServeConfigError, run_api

    given = {"host": host, "port": port, "workers": workers}
    serve = settings.serve.model_copy(update={k: v for k, v in given.items() if v is not None})
    features = settings.features.model_copy(update={"profile": profile} if profile else {})
    try:
        run_api(settings.model_copy(update={"serve": serve, "features": features}))
    except ServeConfigError as e:
        raise click.ClickException(str(e)) from e


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-data"), show_default=True)
@click.option("--mpd", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Your own folder of MPD slices (with or without metadata/) instead of generated data.")
@click.option("--playlists", type=click.IntRange(min=100), default=None, help="Generated sample size.")
@click.pass_obj
def demo(settings: SegueSettings, out: Path, mpd: Path | None, playlists: int | None) -> None:
    """Run every stage built so far end to end and print a summary."""
    from segue.demo import run_demo

    sys.exit(run_demo(settings, out, mpd, playlists))


def main() -> None:
    cli()
