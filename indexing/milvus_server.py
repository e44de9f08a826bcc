"""A local Milvus standalone server: the `milvus` package's own binary (embedded etcd, local disk,
no Docker), run as a detached process so that the API, the stream daemon and the nightly rebuild
can share one index on a single machine, which a Milvus Lite file does not allow.

    server = LocalMilvusServer(data_dir, port=19530).start()   # or: with LocalMilvusServer(...) as s:
    ... server.uri ...                                          # "http://127.0.0.1:19530"
    server.stop()

    segue milvus start | stop | status        # the same, from the command line
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from segue.local_ports import free_port

log = logging.getLogger(__name__)

# The server's internal components advertise these addresses to each other; loopback keeps them
# off other interfaces' routes (the package binds some listeners on every interface regardless).
_COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
_EXECUTABLE = "milvus"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_ETCD_PEER_PORT = 2380  # fixed inside Milvus's embedded etcd: one local server per machine


class MilvusServerError(RuntimeError):
    """The local server could not be started or stopped; the message says where its log is."""


def _is_running_server(pid: int, data_dir: Path) -> bool:
    """Whether `pid` is alive and is the Milvus binary unpacked into `data_dir` (pids get reused)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        exe = os.readlink(f"/proc/{pid}/exe")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and Path(exe).resolve() == (data_dir / "bin" / _EXECUTABLE).resolve()


def local_server(uri: str, data_dir: Path) -> LocalMilvusServer:
    """The local server that answers at `uri` (index.uri), keeping its data in `data_dir`."""
    address = urlparse(uri)
    if address.hostname not in _LOOPBACK:
        raise MilvusServerError(f"index.uri {uri} is not on this machine: `segue milvus` runs a server on "
                                "127.0.0.1 only; start that one where it lives (docker compose up milvus)")
    return LocalMilvusServer(data_dir, address.port or 19530)


class LocalMilvusServer:
    """One Milvus standalone process on 127.0.0.1:`port` keeping its data under `data_dir`.

    A server started again on the same folder keeps its collections and aliases. One started by
    another process (the CLI's detached `start`) is found and stopped through its pid file."""

    def __init__(self, data_dir: Path, port: int = 19530):
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self._process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "milvus.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / "milvus-stdout.log"

    def running_pid(self) -> int | None:
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if _is_running_server(pid, self.data_dir) else None

    def answers(self) -> bool:
        """Whether something listens on the port: this server, or one started another way."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def ensure_started(self) -> bool:
        """Starts the server unless one already answers on the port; True when it started one."""
        if self.answers():
            return False
        self.start()
        return True

    def start(self, timeout_s: float = 120) -> LocalMilvusServer:
        """Launches the server (unpacking the binary on first use) and waits up to `timeout_s`
        until it reports healthy. Starting a running server is a no-op."""
        if self.running_pid() is not None:
            return self
        import milvus  # the PyPI `milvus` package: the binary and its config template

        if LocalMilvusServer(self.data_dir, _ETCD_PEER_PORT).answers():
            raise MilvusServerError(f"another Milvus server runs on this machine: its embedded etcd holds port "
                                    f"{_ETCD_PEER_PORT}, which Milvus does not let a second one move; stop it, or "
                                    "point index.uri at it")

        started = time.monotonic()
        config = milvus.MilvusServerConfig(data_dir=str(self.data_dir), proxy_port=self.port)
        for component in _COMPONENTS:
            config.set(f"{component}.ip", "127.0.0.1")
        try:
            config.resolve()  # free ports for the internal components, and milvus.yaml written
        except RuntimeError as e:
            raise MilvusServerError(f"cannot start Milvus on 127.0.0.1:{self.port}: {e}; is another server "
                                    "there? (`segue milvus status`, or set index.uri to another port)") from None
        milvus._initialize_data_files(str(self.data_dir))
        health_port = free_port()
        executable = self.data_dir / "bin" / _EXECUTABLE
        # A lone server has no other query node to hand its segments to, so Milvus's graceful stop
        # waits out its timeout (1,800 s; `segue milvus stop` killed it after 30 s). Rows are in its
        # write-ahead log either way: a short graceful stop loses nothing and stops in seconds.
        # A Strong read (the stream's newest-event check, a search right after an upsert) waits for
        # the next time tick: at Milvus's 200 ms it took ~300 ms per read here, at 50 ms ~90 ms.
        env = {"COMMON_GRACEFULSTOPTIMEOUT": "5", "PROXY_TIMETICKINTERVAL": "50", **os.environ,
               "DEPLOY_MODE": "STANDALONE",
               "METRICS_PORT": str(health_port),
               "MILVUS_RUN_DIR": str(self.data_dir / "run"),
               "LD_LIBRARY_PATH": ":".join([str(executable.parent), os.environ.get("LD_LIBRARY_PATH", "")])}
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            # A session of its own: the server outlives the command that started it, and a Ctrl-C
            # meant for that command does not reach it.
            self._process = subprocess.Popen([str(executable), "run", "standalone"], cwd=self.data_dir, env=env,
                                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True)
        self.pid_file.write_text(f"{self._process.pid}\n")
        try:
            self._wait_until_healthy(health_port, time.monotonic() + timeout_s)
        except BaseException:
            self._signal_and_wait(self._process.pid, signal.SIGKILL, 20)
            self.pid_file.unlink(missing_ok=True)
            raise
        log.info("milvus server started", extra={"uri": self.uri, "pid": self._process.pid,
                                                 "data_dir": str(self.data_dir),
                                                 "seconds": round(time.monotonic() - started, 1)})
        return self

    def stop(self, timeout_s: float = 30) -> None:
        """Shuts the server down (SIGTERM), killing it if it has not exited in `timeout_s`."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)  # left by a server that died on its own
            log.info("no milvus server running", extra={"data_dir": str(self.data_dir)})
            return
        started = time.monotonic()
        if not self._signal_and_wait(pid, signal.SIGTERM, timeout_s):
            log.warning("milvus ignored SIGTERM; killing it", extra={"pid": pid, "timeout_s": timeout_s})
            self._signal_and_wait(pid, signal.SIGKILL, timeout_s)
        self.pid_file.unlink(missing_ok=True)
        log.info("milvus server stopped", extra={"pid": pid, "seconds": round(time.monotonic() - started, 1)})

    def __enter__(self) -> LocalMilvusServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _wait_until_healthy(self, health_port: int, deadline: float) -> None:
        url = f"http://127.0.0.1:{health_port}/healthz"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise MilvusServerError(f"Milvus exited with code {self._process.returncode} while starting; "
                                        f"see {self.log_file}")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if b"OK" in answer.read():
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise MilvusServerError(f"Milvus did not report healthy in time; see {self.log_file}")

    def _signal_and_wait(self, pid: int, sig: int, timeout_s: float) -> bool:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                if self._process.poll() is not None:
                    return True
            elif not _is_running_server(pid, self.data_dir):
                return True
            time.sleep(0.1)
        return False
