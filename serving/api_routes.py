"""The API's routes, one router per concern: recommendations, tracks, health, admin."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from segue.serving.api_dependencies import RecommenderDep, ServeConfig, TargetsDep, require_admin
from segue.serving.api_models import (
    MAX_K, Problem, RecommendationRequest, RecommendationResponse, ServingStatus, SimilarTracksResponse,
    TargetChoice)
from segue.serving.api_problems import ApiProblem
from segue.serving.serving_target import ServingTargets
from segue.vocabulary import uri_pattern

_ERRORS = {404: {"model": Problem, "description": "Unknown playlist or track"},
           503: {"model": Problem, "description": "Milvus or the feature store is unavailable; retry later"}}
_ADMIN_ERRORS = {status: {"model": Problem} for status in (401, 403, 404, 409, 503)}

recommendations = APIRouter(prefix="/v1", tags=["recommendations"])
tracks = APIRouter(prefix="/v1/tracks", tags=["tracks"])
health = APIRouter(tags=["health"])
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=_ADMIN_ERRORS)


@recommendations.post("/recommendations", response_model=RecommendationResponse, responses=_ERRORS,
                      summary="Tracks to continue a playlist")
async def recommend(request: RecommendationRequest, recommender: RecommenderDep) -> RecommendationResponse:
    """A known playlist (`playlist_id`) is read from Feast; a new one is described by `name` and/or
    `track_uris`. Tracks of the playlist are never returned."""
    return await recommender.recommend(request)


@tracks.get("/{track_uri}/similar", response_model=SimilarTracksResponse, responses=_ERRORS,
            summary="Tracks whose embeddings are nearest to a track's")
async def similar(track_uri: Annotated[str, Path(pattern=uri_pattern("track"))], recommender: RecommenderDep,
                  k: Annotated[int, Query(ge=1, le=MAX_K)] = 10) -> SimilarTracksResponse:
    return await recommender.similar(track_uri, k)


def serving_status(targets: ServingTargets) -> ServingStatus:
    current = targets.served
    return ServingStatus(status="ready" if current and not targets.problem else "not ready", alias=targets.alias,
                         collection=current.collection if current else None,
                         model_version=current.model_version if current else None,
                         pinned=targets.pinned, problem=targets.problem or None)


@health.get("/healthz", summary="Alive")
async def healthz() -> dict:
    return {"status": "alive"}


@health.get("/readyz", response_model=ServingStatus, responses={503: {"model": ServingStatus}},
            summary="Towers loaded, the alias's build served, versions matching")
async def readyz(targets: TargetsDep, cfg: ServeConfig):
    try:  # the alias may have moved since the last refresh: look now, within the time limit
        wanted = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(
            targets.executor, targets.wanted), cfg.search_timeout_s)
    except Exception as e:  # noqa: BLE001 - any failure means not ready, said in the body
        wanted, targets.problem = None, targets.problem or f"Milvus: {type(e).__name__}: {str(e)[:200]}"
    body = serving_status(targets)
    if body.status == "ready" and wanted != body.collection:
        body.status, body.problem = "not ready", f"alias {targets.alias!r} now points at {wanted!r}; switching"
    return JSONResponse(body.model_dump(), 200 if body.status == "ready" else 503)


@health.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@admin.post("/reload", response_model=ServingStatus, summary="Follow the alias now instead of at the next refresh")
async def reload(targets: TargetsDep) -> ServingStatus:
    await asyncio.get_running_loop().run_in_executor(targets.executor, targets.refresh)
    return serving_status(targets)


@admin.put("/target", response_model=ServingStatus, summary="Serve one build (a version switch) or follow the alias again")
async def pin(choice: TargetChoice, targets: TargetsDep) -> ServingStatus:
    # A build that does not exist is a LookupError (404); one that may not serve is PinRefused (409).
    try:
        await asyncio.get_running_loop().run_in_executor(targets.executor, targets.pin, choice.collection)
    except LookupError as e:
        raise ApiProblem(404, "not found", str(e)) from None
    return serving_status(targets)
