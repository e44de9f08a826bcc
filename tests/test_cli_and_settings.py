"""The `segue` command line and the typed settings it reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_slice
from segue.cli import cli
from segue.settings import load_settings, settings_document, source_file, worker_settings


def test_environment_overrides_yaml_and_defaults(tmp_path, monkeypatch):
    config = tmp_path / "segue.yaml"
    config.write_text("spark:\n  master: local[1]\n  shuffle_partitions: 3\npaths:\n  data_dir: /srv/segue\n")
    monkeypatch.setenv("SEGUE_CONFIG", str(config))
    monkeypatch.setenv("SEGUE_SPARK__SHUFFLE_PARTITIONS", "16")
    settings = load_settings()
    assert settings.spark.master == "local[1]"          # from the file
    assert settings.spark.shuffle_partitions == 16      # the environment wins
    assert settings.paths.warehouse_dir == Path("/srv/segue/warehouse/mpd")  # derived


def test_a_bad_setting_is_a_clear_cli_error(tmp_path, monkeypatch):
    config = tmp_path / "segue.yaml"
    config.write_text("spark:\n  shuffle_partitions: -1\n")
    monkeypatch.setenv("SEGUE_CONFIG", str(config))
    result = CliRunner().invoke(cli, ["config", "show"])
    assert result.exit_code == 3
    assert "invalid configuration" in result.output and "shuffle_partitions" in result.output


def test_unknown_keys_are_rejected(tmp_path, monkeypatch):
    config = tmp_path / "segue.yaml"
    config.write_text("sprak:\n  master: local\n")
    monkeypatch.setenv("SEGUE_CONFIG", str(config))
    with pytest.raises(ValueError, match="sprak"):
        load_settings()
    # Inside a section too, from the file and from the environment.
    config.write_text("training:\n  epocs: 5\n")
    with pytest.raises(ValueError, match="training.epocs"):
        load_settings()
    monkeypatch.delenv("SEGUE_CONFIG")
    monkeypatch.chdir(tmp_path / "..")
    monkeypatch.setenv("SEGUE_TRAINING__EPOCS", "5")
    with pytest.raises(ValueError, match="training.epocs"):
        load_settings()


def test_data_validate_counts_a_good_folder(fixture_mpd):
    result = CliRunner().invoke(cli, ["data", "validate", str(fixture_mpd)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"folder": str(fixture_mpd), "playlists": 3, "track_entries": 9,
                                         "challenge_playlists": 0}


def test_data_validate_names_the_broken_record(tmp_path, fixture_doc):
    fixture_doc["playlists"][1]["tracks"][0]["pos"] = -1
    write_slice(tmp_path, fixture_doc)
    result = CliRunner().invoke(cli, ["data", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "pid=1" in result.output and "tracks[0].pos" in result.output


def test_training_overrides_are_typed_and_checked():
    from segue.cli import with_training_overrides

    settings = with_training_overrides(load_settings(), ("epochs=3", "layers=[256, 64]", "cross=parallel"))
    assert settings.training.epochs == 3 and settings.training.layers == [256, 64]
    assert settings.training.cross == "parallel"
    for bad, says in (("epochz=3", "KEY one of"), ("cross=diagonal", "cross"), ("epochs", "KEY=VALUE")):
        result = CliRunner().invoke(cli, ["train", "--set", bad])
        assert result.exit_code == 2 and says in result.output, result.output


def test_evaluate_without_a_model_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGUE_PATHS__DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["evaluate"])
    assert result.exit_code == 4 and "run `segue train` first" in result.output


def test_a_settings_document_for_a_child_process_keeps_secrets_that_dumps_mask():
    from segue.settings import SegueSettings, settings_document

    settings = load_settings(index={"token": "root:s3cret"}, serve={"admin_api_key": "k3y"})
    assert "s3cret" not in json.dumps(settings.model_dump(mode="json")) and "s3cret" not in repr(settings)
    doc = settings_document(settings)
    assert doc["index"]["token"] == "root:s3cret" and doc["serve"]["admin_api_key"] == "k3y"
    assert SegueSettings.model_validate(doc).index.token.get_secret_value() == "root:s3cret"


def test_beam_job_graphs_carry_no_secret_and_workers_take_them_from_their_environment(monkeypatch):
    """Runners show and store job graphs (Flink's UI, Dataflow's console): the stream's and the
    rebuild's transforms are pickled as a runner would, and no secret is in them."""
    from apache_beam.internal import pickler

    from segue.indexing.embedding_pipeline import WriteToMilvus
    from segue.streaming.beam_pipeline import WriteDeadLetters, WriteStreamEvents, _worker_settings

    secrets = {"index": {"token": "root:m1lvus-s3cret"}, "kafka": {"sasl_password": "k4fka-s3cret"},
               "serve": {"admin_api_key": "adm1n-s3cret"}}
    settings = load_settings(**secrets)
    for transform in (WriteStreamEvents(settings), WriteDeadLetters(settings),
                      WriteToMilvus("http://milvus:19530", "tracks_v1", 100)):
        graph = pickler.dumps(transform)
        for section in secrets.values():
            for secret in section.values():
                assert secret.encode() not in graph, (type(transform).__name__, secret)
    monkeypatch.setenv("SEGUE_INDEX__TOKEN", "root:m1lvus-s3cret")
    monkeypatch.setenv("SEGUE_KAFKA__SASL_PASSWORD", "k4fka-s3cret")
    worker = _worker_settings(WriteStreamEvents(settings)._settings_json)
    assert worker.index.token.get_secret_value() == "root:m1lvus-s3cret"
    assert worker.kafka.sasl_password.get_secret_value() == "k4fka-s3cret"
    assert worker.stream == settings.stream and worker.paths == settings.paths


def test_commands_need_no_variable_and_say_their_version():
    """From a shell with only the virtualenv's `segue` on hand: no TF_USE_LEGACY_KERAS to remember."""
    from segue import __version__

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "SEGUE_"))}
    segue = str(Path(sys.executable).parent / "segue")
    assert subprocess.run([segue, "--version"], env=env, capture_output=True, text=True).stdout.strip() == \
        f"segue, version {__version__}"
    # TFRS imports only under Keras 2; without the package setting it this raised an ImportError.
    done = subprocess.run([sys.executable, "-c", "import segue.training.model"], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cuInit" not in done.stderr and "oneDNN" not in done.stderr


def test_config_option_and_model_rollback(tmp_path, monkeypatch):
    config = tmp_path / "other.yaml"
    config.write_text(f"paths:\n  data_dir: {tmp_path}\n")
    monkeypatch.setenv("SEGUE_CONFIG", str(tmp_path / "absent.yaml"))  # --config wins
    shown = CliRunner().invoke(cli, ["--config", str(config), "config", "show"])
    assert shown.exit_code == 0 and json.loads(shown.output)["paths"]["data_dir"] == str(tmp_path)
    # As a value: the process environment is left as it was (two settings can live in one process).
    assert os.environ["SEGUE_CONFIG"] == str(tmp_path / "absent.yaml")
    assert load_settings(config).paths.data_dir == tmp_path
    # A Beam worker gets the document without secrets and reads them where it can: here, the file.
    config.write_text(f"paths:\n  data_dir: {tmp_path}\nindex:\n  token: from-the-file\n")
    job = load_settings(config)
    worker = worker_settings(settings_document(job, secrets=False), source_file(job))
    assert worker.index.token.get_secret_value() == "from-the-file" and worker.paths.data_dir == tmp_path
    config.write_text(f"paths:\n  data_dir: {tmp_path}\n")
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        load_settings()
    monkeypatch.setenv("SEGUE_TRAINING__EPOCHS", "7")
    lines = CliRunner().invoke(cli, ["--config", str(config), "config", "show", "--sources"]).output.splitlines()
    assert f'paths.data_dir = "{tmp_path}"  (file {config})' in lines
    assert "training.epochs = 7  (environment)" in lines and "training.batch_size = 1024  (default)" in lines
    monkeypatch.delenv("SEGUE_TRAINING__EPOCHS")

    for name in ("two_tower-1", "two_tower-2"):
        (tmp_path / "models" / name).mkdir(parents=True)
        (tmp_path / "models" / name / "manifest.json").write_text(json.dumps({"version": name}))
    (tmp_path / "models" / "latest").symlink_to("two_tower-2")
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(config), "models", "rollback"]).exit_code == 0
    assert (tmp_path / "models" / "latest").resolve().name == "two_tower-1"
    listed = runner.invoke(cli, ["--config", str(config), "models", "list"]).output
    assert "* two_tower-1" in listed and "  two_tower-2" in listed
    assert runner.invoke(cli, ["--config", str(config), "models", "rollback"]).exit_code == 1  # none older
    assert runner.invoke(cli, ["--config", str(config), "models", "promote", "two_tower-2"]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["--config", str(config), "models", "show"]).output)["version"] == \
        "two_tower-2"
    missing = runner.invoke(cli, ["--config", str(config), "models", "promote", "two_tower-9"])
    assert missing.exit_code == 4 and "two_tower-1, two_tower-2" in missing.output


def _segue(args, **env):
    """`segue` as a user runs it, in a fresh process; returns (exit code, stderr)."""
    done = subprocess.run([str(Path(sys.executable).parent / "segue"), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)
    return done.returncode, done.stderr


@pytest.mark.parametrize("args, env, code, says", [
    (["index", "status"], {"SEGUE_INDEX__PROFILE": "cpu_hnsw", "SEGUE_INDEX__URI": "http://127.0.0.1:9"},
     5, "Milvus at http://127.0.0.1:9 does not answer"),
    (["stream", "publish", "--generated", "1"], {"SEGUE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9"},
     5, "Kafka at 127.0.0.1:9"),
    (["batch", "ingest"], {"JAVA_HOME": "/nonexistent"}, 6, "install Java 17"),
    (["features", "materialize"], {}, 4, "run `segue features apply` first"),
])
def test_known_failures_end_in_one_line_and_their_own_exit_code(tmp_path, args, env, code, says):
    """A dependency away, Java missing, the registry not applied: one line naming it and the fix."""
    from segue.features.store import REPO_PATH

    repo = tmp_path / "feature_repo"  # never applied
    shutil.copytree(REPO_PATH, repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    if args[0] == "batch":
        (tmp_path / "mpd").mkdir()
        args = [*args, "--input", str(tmp_path / "mpd")]
    env = {"SEGUE_PATHS__DATA_DIR": str(tmp_path), "SEGUE_FEATURES__REPO_PATH": str(repo), **env}
    exit_code, stderr = _segue(args, **env)
    lines = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert exit_code == code and "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1 and says in lines[0], stderr[-3000:]
    if code != 5:  # --debug shows where it came from
        assert "Traceback" in _segue(["--debug", *args], **env)[1]


def test_topics_the_cluster_refuses_are_a_configuration_failure():
    from segue.cli_failures import CONFIGURATION, known_failure
    from segue.streaming.kafka_clients import TopicSetupError

    refused = TopicSetupError("only 1 broker(s) are registered. Set stream.replication_factor to at most ...")
    assert known_failure(RuntimeError("while starting the daemon"), None) is None  # unknown: keeps its traceback
    try:
        raise RuntimeError("starting the stream daemon") from refused
    except RuntimeError as error:
        found = known_failure(error, None)
    assert found.exit_code == CONFIGURATION and "stream.replication_factor" in found.message
