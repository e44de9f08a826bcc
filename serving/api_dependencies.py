"""What a route asks FastAPI for: the serving objects the app's lifespan put on `app.state`, and
the admin key check."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from segue.serving.api_problems import ApiProblem
from segue.serving.recommender import Recommender
from segue.serving.serving_target import ServingTargets
from segue.settings import ServeSettings


async def serve_settings(request: Request) -> ServeSettings:
    return request.app.state.serve_settings


async def recommender(request: Request) -> Recommender:
    return request.app.state.recommender


async def serving_targets(request: Request) -> ServingTargets:
    return request.app.state.targets


async def require_admin(cfg: Annotated[ServeSettings, Depends(serve_settings)],
                        x_api_key: Annotated[str | None, Header()] = None) -> None:
    """403 while `serve.admin_api_key` is unset; 401 unless X-API-Key matches it."""
    expected = cfg.admin_api_key
    if expected is None:
        raise ApiProblem(403, "admin endpoints are off", "set serve.admin_api_key (SEGUE_SERVE__ADMIN_API_KEY)")
    if x_api_key is None or not secrets.compare_digest(x_api_key.encode(), expected.get_secret_value().encode()):
        raise ApiProblem(401, "unauthorized", "send the admin key in the X-API-Key header")


ServeConfig = Annotated[ServeSettings, Depends(serve_settings)]
RecommenderDep = Annotated[Recommender, Depends(recommender)]
TargetsDep = Annotated[ServingTargets, Depends(serving_targets)]
