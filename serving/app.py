"""`segue serve`: the FastAPI application.

Endpoints: POST /v1/recommendations, GET /v1/tracks/{track_uri}/similar, /healthz, /readyz,
/metrics, and the admin endpoints (reload, pin a build) behind `serve.admin_api_key`. The routes
are in `api_routes.py`; this module wires them to the serving objects its lifespan opens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from segue.serving import api_routes
from segue.serving.api_metrics import ServingMetrics
from segue.serving.api_problems import BodyTooLarge, add_problem_handlers, problem_response, too_large_body
from segue.serving.recommender import Recommender
from segue.serving.serving_target import ServingTargets
from segue.settings import SegueSettings
from segue.training.model_versions import ModelVersions

_LOGGER = logging.getLogger(__name__)


class BodyLimit:
    """413 for bodies over `limit` bytes, announced (Content-Length) or streamed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            return await JSONResponse(too_large_body(self.limit), 413)(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge()
            return message

        return await self.app(scope, limited, send)


def _lifespan(settings: SegueSettings):
    """Opens the store, the index and the model versions; follows the alias while the app runs."""
    cfg = settings.serve

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from segue.features.store import open_store, with_socket_timeouts
        from segue.indexing.milvus_connection import index_profile, open_client
        from segue.indexing.track_index import TrackIndex

        metrics: ServingMetrics = app.state.metrics
        features = settings.features.model_copy(update={"redis_connection_string": with_socket_timeouts(
            settings.features.redis_connection_string, cfg.redis_socket_timeout_s)})
        store = open_store(settings.model_copy(update={"features": features}))
        client = open_client(settings)
        targets = ServingTargets(client, settings.index.alias, ModelVersions(settings.paths.models_dir),
                                 cfg.search_timeout_s)
        recommender = Recommender(store, TrackIndex(client, settings.index.alias, index_profile(settings)),
                                  targets, cfg, settings.features, settings.candidates, settings.ranker, metrics)
        app.state.targets, app.state.recommender = targets, recommender
        loop = asyncio.get_running_loop()

        async def follow_alias():
            while True:
                await loop.run_in_executor(targets.executor, targets.refresh)
                if targets.served is not None:
                    metrics.target = (targets.served.collection, targets.served.model_version)
                metrics.swaps = targets.swaps
                await asyncio.sleep(cfg.refresh_s)

        await loop.run_in_executor(recommender.pool, recommender.warm_up)
        follower = asyncio.create_task(follow_alias())
        _LOGGER.info("serving", extra={"alias": settings.index.alias, "feature_profile": settings.features.profile,
                                       "index_profile": settings.index.profile, "problem": targets.problem or None})
        try:
            yield
        finally:
            follower.cancel()
            recommender.close()
            targets.executor.shutdown(wait=False, cancel_futures=True)

    return lifespan


def create_app(settings: SegueSettings) -> FastAPI:
    cfg = settings.serve
    metrics = ServingMetrics()
    app = FastAPI(title="Segue recommendations", version="1", lifespan=_lifespan(settings),
                  description="Playlist continuation: a two-tower model's query tower over Feast's online "
                              "features, searched in Milvus with business filters.")
    app.state.serve_settings, app.state.metrics, app.state.in_flight = cfg, metrics, 0
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)
    add_problem_handlers(app, cfg, metrics)

    @app.middleware("http")
    async def bounded(request: Request, call_next):
        """At most `serve.max_in_flight` API requests at once: the rest get 503 now, not a queue."""
        if not request.url.path.startswith("/v1/"):
            return await call_next(request)
        if app.state.in_flight >= cfg.max_in_flight:
            return problem_response(cfg, 503, "overloaded",
                                    f"{cfg.max_in_flight} requests in progress (serve.max_in_flight)", retry=True)
        app.state.in_flight += 1
        try:
            return await call_next(request)
        finally:
            app.state.in_flight -= 1

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "other")
        metrics.requests.inc(f"{endpoint} {response.status_code}")
        metrics.request_seconds.observe(time.perf_counter() - start, endpoint)
        return response

    for router in (api_routes.recommendations, api_routes.tracks, api_routes.health, api_routes.admin):
        app.include_router(router)
    return app
