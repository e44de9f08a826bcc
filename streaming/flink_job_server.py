"""A local Flink job server for Beam's portable runner: one JVM with a Flink mini-cluster, Beam's job
service and its Java expansion service. It lets `segue stream beam --local-flink` (and the tests)
run the streaming pipeline with `ReadFromKafka` on this machine, with no Docker and no download at
run time beyond Maven's one-off fetch.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from segue.local_ports import free_port
from segue.streaming.maven_jars import JarSetupError, ensure_jars, pom_property, require_tool

log = logging.getLogger(__name__)
FLINK_POM = Path(__file__).parent / "flink" / "pom.xml"
# What Flink's own launch scripts open on Java 17: its Kryo serializer snapshots state (KafkaIO's
# offsets, for one) by reflection into these packages.
JAVA_17_OPENS = [f"--add-opens=java.base/{package}=ALL-UNNAMED" for package in (
    "java.util", "java.lang", "java.lang.reflect", "java.io", "java.net", "java.nio", "sun.nio.ch", "java.text",
    "java.time", "java.util.concurrent", "java.util.concurrent.atomic", "java.util.concurrent.locks")]


def ensure_flink_jars(cache_dir: Path | None = None) -> Path:
    version = pom_property(FLINK_POM, "beam.version")
    libs = Path(cache_dir or Path.home() / ".cache" / "segue" / "beam-flink") / version / "libs"
    return ensure_jars(FLINK_POM, libs, f"the local Flink job server (Beam Java {version})")


class FlinkJobServer:
    """`with FlinkJobServer(folder) as server:` gives `server.pipeline_options()` and
    `server.expansion_service` for a pipeline; leaving the block cancels its jobs and stops the JVM."""

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir)
        self.job_port, self.artifact_port, self.expansion_port, self.rest_port = (free_port() for _ in range(4))
        self._process: subprocess.Popen | None = None

    @property
    def expansion_service(self) -> str:
        return f"localhost:{self.expansion_port}"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "job-server.log"

    def pipeline_options(self) -> list[str]:
        return [
            "--runner=PortableRunner", f"--job_endpoint=localhost:{self.job_port}",
            "--environment_type=LOOPBACK",  # the Python steps run in this process
            "--parallelism=1",
            # Passed through to Java: KafkaIO runs inside the Flink JVM instead of a Docker container.
            "--default_environment_type=EMBEDDED",
            # An unbounded read needs checkpoints to hand its output on, and a bundle cut by a
            # checkpoint must be flushed first, or its records wait for an element that never comes.
            "--checkpointing_interval=1000", "--finish_bundle_before_checkpointing",
        ]

    def start(self, timeout_s: float = 120) -> FlinkJobServer:
        java = require_tool("java", "the local Flink job server", "Install a Java 17+ runtime.")
        libs = ensure_flink_jars()
        conf = self.work_dir / "flink-conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "config.yaml").write_text(
            f"rest.port: {self.rest_port}\nrest.address: localhost\nrest.bind-address: localhost\n")
        (conf / "flink-conf.yaml").write_text((conf / "config.yaml").read_text())
        with self.log_file.open("ab") as out:
            self._process = subprocess.Popen(
                [java, "-Xmx1g", *JAVA_17_OPENS, "-cp", f"{libs}/*", "org.apache.beam.runners.flink.FlinkJobServerDriver",
                 "--job-port", str(self.job_port), "--artifact-port", str(self.artifact_port),
                 "--expansion-port", str(self.expansion_port), "--flink-master", "[local]",
                 "--flink-conf-dir", str(conf)],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.work_dir)
        deadline = time.monotonic() + timeout_s
        while not all(self._listening(p) for p in (self.job_port, self.expansion_port)):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise JarSetupError(f"the Flink job server did not start; see {self.log_file}:\n"
                                    + self.log_file.read_text(errors="replace")[-3000:])
            time.sleep(0.2)
        log.info("flink job server started", extra={"job_port": self.job_port, "expansion_port": self.expansion_port,
                                                    "rest_port": self.rest_port})
        return self

    def cancel_jobs(self) -> int:
        """Cancels the running Flink jobs through Flink's REST API (Beam 2.62's own cancel leaves a
        local job running)."""
        try:
            overview = json.load(urllib.request.urlopen(
                f"http://localhost:{self.rest_port}/jobs/overview", timeout=5))
        except OSError:
            return 0
        running = [j["jid"] for j in overview.get("jobs", []) if j.get("state") == "RUNNING"]
        for jid in running:
            urllib.request.urlopen(urllib.request.Request(
                f"http://localhost:{self.rest_port}/jobs/{jid}?mode=cancel", method="PATCH"), timeout=5)
        return len(running)

    def stop(self, timeout_s: float = 20) -> None:
        if self._process is None:
            return
        self.cancel_jobs()
        self._process.terminate()
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> FlinkJobServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @staticmethod
    def _listening(port: int) -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", port)) == 0
