"""Running the API: `segue serve` (uvicorn, optionally several workers) or a thread of this process.

Milvus Lite opens its file from one process only, so on the embedded profile the API runs in one
process; the demo and the embedded tests run it in a thread of the process that already holds
the file.
"""

from __future__ import annotations

import functools
import threading
import time

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from segue.logs import configure_logging
from segue.serving.app import create_app
from segue.settings import SegueSettings


class ServeConfigError(ValueError):
    pass


def run_api(settings: SegueSettings) -> None:
    """Blocks serving on `serve.host:serve.port` until interrupted."""
    cfg = settings.serve
    if cfg.workers > 1:
        if settings.index.profile == "embedded":
            raise ServeConfigError(f"serve.workers={cfg.workers}, but the embedded index (Milvus Lite) opens its "
                                   "file from one process only: use workers=1, or a Milvus server "
                                   "(index.profile cpu_hnsw, the default, with `segue milvus start`)")
        # uvicorn's own supervisor, given the app factory with the settings as a value: each worker
        # process receives them pickled, so they are this command's settings, not a fresh read.
        # A worker imports TensorFlow before it first answers its supervisor: seconds, not uvicorn's 5.
        config = uvicorn.Config(functools.partial(worker_app, settings), factory=True, host=cfg.host,
                                port=cfg.port, workers=cfg.workers, log_config=None, access_log=False,
                                timeout_worker_healthcheck=120)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    uvicorn.run(create_app(settings), host=cfg.host, port=cfg.port, log_config=None, access_log=False)


def worker_app(settings: SegueSettings) -> FastAPI:
    """One worker process's app: its logging as the settings say, then the app."""
    configure_logging(settings.log.format, settings.log.level)
    return create_app(settings)


class ApiServerThread:
    """`with ApiServerThread(settings) as api: requests.post(api.url + ...)`; port 0 picks a free one."""

    def __init__(self, settings: SegueSettings, startup_timeout_s: float = 120):
        self.settings, self.startup_timeout_s = settings, startup_timeout_s
        cfg = settings.serve
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host=cfg.host, port=cfg.port,
                                                    log_config=None, access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="segue-api", daemon=True)
        self.url = ""

    def __enter__(self) -> "ApiServerThread":
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API did not start; its log above says why")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.settings.serve.host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
