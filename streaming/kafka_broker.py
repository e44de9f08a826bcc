"""A local Apache Kafka broker: one KRaft node (broker and controller in one JVM, no ZooKeeper) run
from Apache's own jars, which Maven fetches from Maven Central once into a cache.

    broker = KafkaBroker(data_dir).start()      # or: with KafkaBroker(data_dir) as broker: ...
    broker.create_topics(["playlist-events"])
    ... broker.bootstrap_servers ...             # "127.0.0.1:<port>"
    broker.stop()

    segue kafka start [--data-dir DIR] [--port N]   # detached; `segue kafka stop` stops it
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from segue.streaming.kafka_jars import ensure_kafka_jars, require_java
from segue.local_ports import free_port

log = logging.getLogger(__name__)

BROKER_MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"
NODE_ID = 1

# Every line goes to stdout, which start() sends to data_dir/broker.log.
LOG4J2_PROPERTIES = """\
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
# One line per request and per partition state change: noise for a development broker.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state_change.name = state.change.logger
logger.state_change.level = WARN
"""


class KafkaBrokerError(RuntimeError):
    """The broker could not be formatted, started or stopped."""


def _random_cluster_id() -> str:
    """A Kafka Uuid as the StorageTool's random-uuid prints it (URL-safe base64, no padding), made
    here to save a JVM start. Like Kafka, skip ids that start with '-': tools read them as flags."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _is_running_broker(pid: int, properties: Path) -> bool:
    """Whether `pid` is alive and is the broker launched with `properties` (pids get reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and BROKER_MAIN_CLASS.encode() in cmdline and str(properties).encode() in cmdline


class KafkaBroker:
    """One local KRaft node (process.roles=broker,controller) listening on 127.0.0.1 only.

    Its data (log.dirs) lives under `data_dir`: a broker started again on the same folder keeps its
    topics, messages and committed offsets. A broker started by another process (the CLI's detached
    `start`) can be stopped through the pid file it leaves in `data_dir`."""

    def __init__(self, data_dir: Path, port: int | None = None, controller_port: int | None = None,
                 jars_dir: Path | None = None, heap: str = "512m"):
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self.jars_dir = jars_dir
        self.heap = heap
        self._process: subprocess.Popen | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "kafka-logs"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def pid(self) -> int | None:
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        return None

    def server_properties(self) -> dict[str, str]:
        controller = f"127.0.0.1:{self.controller_port}"
        return {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@{controller}",
            "listeners": f"PLAINTEXT://{self.bootstrap_servers},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap_servers}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            # One node: internal topics cannot have the default three replicas.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # The consumer-offsets topic is created on the first group join; 50 partitions (the
            # default) cost seconds on a small machine and buy nothing on one node.
            "offsets.topic.num.partitions": "4",
            "num.partitions": "4",
            "auto.create.topics.enable": "false",
            # A development broker should hand a lone consumer its partitions at once, not after 3 s.
            "group.initial.rebalance.delay.ms": "0",
            # After a crash the controller refuses the node's new registration until the old one's
            # session expires (9 s by default). Broker and controller share one JVM here, so a pause
            # that delays heartbeats delays the session check too: a short session costs nothing.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "3000",
        }

    def start(self, timeout_s: float = 60) -> KafkaBroker:
        """Formats `data_dir` on first use, launches the broker and waits up to `timeout_s` (not
        counting a first fetch of the jars) until it answers clients."""
        if self.pid is not None:
            return self
        self._refuse_if_already_running()
        started = time.monotonic()
        libs = self.jars_dir or ensure_kafka_jars()
        java = require_java()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_configs()
        if not (self.log_dir / "meta.properties").is_file():
            self._format_storage(java, libs)

        with self.log_file.open("ab") as log_stream:
            log_offset = log_stream.tell()
            # A session of its own: a detached broker outlives the shell that started it, and a
            # Ctrl-C meant for the caller does not reach it (stop() shuts it down cleanly instead).
            # Log4j's own shutdown hook would close the log before Kafka's hook logs its shutdown.
            self._process = subprocess.Popen(
                [java, f"-Xmx{self.heap}", "-Djava.awt.headless=true", "-Dlog4j2.shutdownHookEnabled=false",
                 f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                 "-cp", f"{libs}/*", BROKER_MAIN_CLASS, str(self.properties_file)],
                stdin=subprocess.DEVNULL, stdout=log_stream, stderr=subprocess.STDOUT,
                cwd=self.data_dir, start_new_session=True)
        self.pid_file.write_text(f"{self._process.pid}\n")
        try:
            self._wait_until_ready(time.monotonic() + timeout_s, log_offset)
        except BaseException:
            self.kill()
            raise
        log.info("kafka broker started", extra={"bootstrap_servers": self.bootstrap_servers,
                                                "pid": self._process.pid, "data_dir": str(self.data_dir),
                                                "seconds": round(time.monotonic() - started, 1)})
        return self

    def stop(self, timeout_s: float = 20) -> None:
        """Shuts the broker down cleanly (SIGTERM), killing it if it has not exited in `timeout_s`.
        Stops a broker another process started on `data_dir` too (through its pid file)."""
        pid = self.pid or self._pid_from_file()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)  # left by a broker that died on its own
            log.info("no kafka broker running", extra={"data_dir": str(self.data_dir)})
            return
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        if not self._wait_for_exit(pid, timeout_s):
            log.warning("kafka broker ignored SIGTERM; killing it", extra={"pid": pid, "timeout_s": timeout_s})
            os.kill(pid, signal.SIGKILL)
            self._wait_for_exit(pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)
        log.info("kafka broker stopped", extra={"pid": pid, "seconds": round(time.monotonic() - started, 1)})

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean shutdown, so the next start has to recover its logs."""
        pid = self.pid or self._pid_from_file()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        self._wait_for_exit(pid, timeout_s=20)
        self.pid_file.unlink(missing_ok=True)
        log.info("kafka broker killed", extra={"pid": pid})

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def create_topics(self, names: Iterable[str], partitions: int = 4) -> None:
        """Creates the topics that do not exist yet and waits until every partition has a leader."""
        names = list(names)
        with KafkaAdminClient(bootstrap_servers=self.bootstrap_servers) as admin:
            response = admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": 1} for name in names},
                raise_errors=False)
            for topic in response["topics"]:
                error = for_code(topic["error_code"])
                if topic["error_code"] != 0 and error is not TopicAlreadyExistsError:
                    raise error(f"creating topic {topic['name']}: {topic.get('error_message')}")
            admin.wait_for_topics(names, timeout_ms=30_000)
        log.info("kafka topics ready", extra={"topics": names, "partitions": partitions})

    def _write_configs(self) -> None:
        self.properties_file.write_text("".join(f"{key}={value}\n" for key, value in self.server_properties().items()))
        (self.data_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)

    def _format_storage(self, java: str, libs: Path) -> None:
        cluster_id = _random_cluster_id()
        result = subprocess.run(
            [java, "-cp", f"{libs}/*", f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
             STORAGE_TOOL_CLASS, "format", "--cluster-id", cluster_id, "--config", str(self.properties_file)],
            capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise KafkaBrokerError(f"formatting {self.log_dir} failed (exit {result.returncode}):\n"
                                   f"{(result.stdout + result.stderr).strip()[-4000:]}")
        log.info("kafka storage formatted", extra={"log_dir": str(self.log_dir), "cluster_id": cluster_id})

    def _wait_until_ready(self, deadline: float, log_offset: int) -> None:
        # The TCP probe is cheap and keeps kafka-python from logging connection errors while the JVM
        # boots; the admin call then proves the broker is registered and unfenced, not just listening.
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise KafkaBrokerError(f"the kafka broker exited with code {self._process.returncode} while starting"
                                       f"{self._startup_log_summary(log_offset)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                with KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, bootstrap_timeout_ms=5000,
                                      request_timeout_ms=5000) as admin:
                    brokers = admin.describe_cluster()["brokers"]
                if any(b["broker_id"] == NODE_ID and not b.get("is_fenced", False) for b in brokers):
                    return
            except (OSError, KafkaError):
                pass
            time.sleep(0.25)
        raise KafkaBrokerError(f"the kafka broker did not answer on {self.bootstrap_servers} in time"
                               f"{self._startup_log_summary(log_offset)}")

    def _wait_for_exit(self, pid: int, timeout_s: float) -> bool:
        if self._process is not None and self._process.pid == pid:
            try:
                self._process.wait(timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _is_running_broker(pid, self.properties_file):
                return True
            time.sleep(0.1)
        return False

    def _pid_from_file(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _is_running_broker(pid, self.properties_file) else None

    def _refuse_if_already_running(self) -> None:
        pid = self._pid_from_file()
        if pid is not None:
            raise KafkaBrokerError(f"a kafka broker (pid {pid}) already runs on {self.data_dir}; stop it first")

    def _startup_log_summary(self, log_offset: int) -> str:
        """This start's errors and last lines: the cause is usually logged well before the shutdown
        chatter that ends the log."""
        with self.log_file.open("rb") as log_stream:
            log_stream.seek(log_offset)
            lines = log_stream.read().decode(errors="replace").splitlines()
        errors = []
        for line, following in zip(lines, lines[1:] + [""]):
            if " ERROR " in line:
                errors.append(line)
                # The exception's own message starts the line after (its stack trace is indented).
                if following and not following.startswith(("[", "\t")):
                    errors.append(following)
        return (f"\nerrors in {self.log_file}:\n" + "\n".join(errors[:20] or ["(none)"])
                + "\nlast lines:\n" + "\n".join(lines[-20:]))
