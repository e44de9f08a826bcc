"""`segue serve`: the FastAPI application.

Endpoints: POST /v1/recommendations, GET /v1/tracks/{track_uri}/similar, /healthz, /readyz,
/metrics, and the admin endpoints (reload, pin a build) behind `serve.admin_api_key`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from segue.serving.api_metrics import ServingMetrics
from segue.serving.api_models import (
    MAX_K, Problem, RecommendationRequest, RecommendationResponse, SimilarTracksResponse)
from segue.serving.recommender import (
    DependencyUnavailable, PlaylistNotFound, Recommender, RequestLimit, TrackNotFound)
from segue.serving.serving_target import NotReady, PinRefused, ServingTargets
from segue.settings import SegueSettings
from segue.training.model_versions import ModelVersions
from segue.vocabulary import uri_pattern

_LOGGER = logging.getLogger(__name__)
_ERRORS = {404: {"model": Problem, "description": "Unknown playlist or track"},
           503: {"model": Problem, "description": "Milvus or the feature store is unavailable; retry later"}}


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """413 for bodies over `limit` bytes, announced (Content-Length) or streamed."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            return await JSONResponse(_too_large(self.limit), 413)(scope, receive, send)
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise BodyTooLarge()
            return message

        return await self.app(scope, limited, send)


def _too_large(limit: int) -> dict:
    return Problem(error="body too large", detail=f"request bodies are limited to {limit} bytes").model_dump()


class TargetChoice(BaseModel):
    collection: str | None = Field(None, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                   description="A build to serve whatever the alias says; null follows the alias")


class ServingStatus(BaseModel):
    status: str
    alias: str
    collection: str | None = None
    model_version: str | None = None
    pinned: str | None = None
    problem: str | None = None


def create_app(settings: SegueSettings) -> FastAPI:
    cfg = settings.serve
    metrics = ServingMetrics()
    parts: dict[str, object] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from segue.features.store import open_store, with_socket_timeouts
        from segue.indexing.milvus_connection import index_profile, open_client
        from segue.indexing.track_index import TrackIndex

        features = settings.features.model_copy(update={"redis_connection_string": with_socket_timeouts(
            settings.features.redis_connection_string, cfg.redis_socket_timeout_s)})
        store = open_store(settings.model_copy(update={"features": features}))
        client = open_client(settings)
        targets = ServingTargets(client, settings.index.alias, ModelVersions(settings.paths.models_dir),
                                 cfg.search_timeout_s)
        recommender = Recommender(store, TrackIndex(client, settings.index.alias, index_profile(settings)),
                                  targets, cfg, settings.features, settings.candidates, settings.ranker, metrics)
        parts.update(targets=targets, recommender=recommender)
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

    app = FastAPI(title="Segue recommendations", version="1", lifespan=lifespan,
                  description="Playlist continuation: a two-tower model's query tower over Feast's online "
                              "features, searched in Milvus with business filters.")
    app.add_middleware(BodyLimit, limit=cfg.max_body_bytes)

    def recommender() -> Recommender:
        return parts["recommender"]  # type: ignore[return-value]

    def targets() -> ServingTargets:
        return parts["targets"]  # type: ignore[return-value]

    def problem(status: int, error: str, detail: str, retry: bool = False) -> JSONResponse:
        body = Problem(error=error, detail=detail, retry_after_s=cfg.retry_after_s if retry else None)
        headers = {"Retry-After": str(cfg.retry_after_s)} if retry else None
        return JSONResponse(body.model_dump(exclude_none=True), status, headers=headers)

    @app.exception_handler(DependencyUnavailable)
    async def _unavailable(request: Request, e: DependencyUnavailable):
        metrics.dependency_failures.inc(e.dependency)
        _LOGGER.warning("dependency unavailable", extra={"dependency": e.dependency, "error": e.detail})
        return problem(503, f"{e.dependency} unavailable", e.detail, retry=True)

    @app.exception_handler(NotReady)
    async def _not_ready(request: Request, e: NotReady):
        return problem(503, "not ready", str(e), retry=True)

    @app.exception_handler(PlaylistNotFound)
    @app.exception_handler(TrackNotFound)
    async def _not_found(request: Request, e: LookupError):
        return problem(404, "not found", str(e.args[0]))

    @app.exception_handler(RequestLimit)
    async def _limit(request: Request, e: RequestLimit):
        return JSONResponse({"detail": [{"loc": ["body", *e.field.split(".")], "msg": str(e), "type": "limit"}]},
                            422)

    @app.exception_handler(BodyTooLarge)
    async def _too_large_handler(request: Request, e: BodyTooLarge):
        return JSONResponse(_too_large(cfg.max_body_bytes), 413)

    app.state.in_flight = 0

    @app.middleware("http")
    async def bounded(request: Request, call_next):
        """At most `serve.max_in_flight` API requests at once: the rest get 503 now, not a queue."""
        if not request.url.path.startswith("/v1/"):
            return await call_next(request)
        if app.state.in_flight >= cfg.max_in_flight:
            return problem(503, "overloaded", f"{cfg.max_in_flight} requests in progress (serve.max_in_flight)",
                           retry=True)
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

    @app.post("/v1/recommendations", response_model=RecommendationResponse, responses=_ERRORS,
              summary="Tracks to continue a playlist")
    async def recommendations(request: RecommendationRequest) -> RecommendationResponse:
        """A known playlist (`playlist_id`) is read from Feast; a new one is described by `name` and/or
        `track_uris`. Tracks of the playlist are never returned."""
        return await recommender().recommend(request)

    @app.get("/v1/tracks/{track_uri}/similar", response_model=SimilarTracksResponse, responses=_ERRORS,
             summary="Tracks whose embeddings are nearest to a track's")
    async def similar(track_uri: Annotated[str, Path(pattern=uri_pattern("track"))],
                      k: Annotated[int, Query(ge=1, le=MAX_K)] = 10) -> SimilarTracksResponse:
        return await recommender().similar(track_uri, k)

    @app.get("/healthz", summary="Alive")
    async def healthz() -> dict:
        return {"status": "alive"}

    def status() -> ServingStatus:
        t = targets()
        current = t.served
        return ServingStatus(status="ready" if current and not t.problem else "not ready", alias=t.alias,
                             collection=current.collection if current else None,
                             model_version=current.model_version if current else None,
                             pinned=t.pinned, problem=t.problem or None)

    @app.get("/readyz", response_model=ServingStatus, responses={503: {"model": ServingStatus}},
             summary="Towers loaded, the alias's build served, versions matching")
    async def readyz():
        t = targets()
        try:  # the alias may have moved since the last refresh: look now, within the time limit
            wanted = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
                t.executor, t.wanted), cfg.search_timeout_s)
        except Exception as e:  # noqa: BLE001 - any failure means not ready, said in the body
            wanted, t.problem = None, t.problem or f"Milvus: {type(e).__name__}: {str(e)[:200]}"
        body = status()
        if body.status == "ready" and wanted != body.collection:
            body.status, body.problem = "not ready", f"alias {t.alias!r} now points at {wanted!r}; switching"
        return JSONResponse(body.model_dump(), 200 if body.status == "ready" else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def require_admin(key: str | None) -> JSONResponse | None:
        expected = cfg.admin_api_key
        if expected is None:
            return problem(403, "admin endpoints are off", "set serve.admin_api_key (SEGUE_SERVE__ADMIN_API_KEY)")
        if key is None or not secrets.compare_digest(key.encode(), expected.get_secret_value().encode()):
            return problem(401, "unauthorized", "send the admin key in the X-API-Key header")
        return None

    admin_errors = {401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem},
                    503: {"model": Problem}}

    @app.post("/admin/reload", response_model=ServingStatus, responses=admin_errors,
              summary="Follow the alias now instead of at the next refresh")
    async def reload(x_api_key: Annotated[str | None, Header()] = None):
        denied = require_admin(x_api_key)
        if denied:
            return denied
        await asyncio.get_running_loop().run_in_executor(targets().executor, targets().refresh)
        return status()

    @app.put("/admin/target", response_model=ServingStatus, responses=admin_errors,
             summary="Serve one build (a version switch) or follow the alias again")
    async def pin(choice: TargetChoice, x_api_key: Annotated[str | None, Header()] = None):
        denied = require_admin(x_api_key)
        if denied:
            return denied
        try:
            await asyncio.get_running_loop().run_in_executor(targets().executor, targets().pin,
                                                       choice.collection)
        except LookupError as e:
            return problem(404, "not found", str(e))
        except PinRefused as e:
            return problem(409, "not servable", str(e))
        return status()

    return app
