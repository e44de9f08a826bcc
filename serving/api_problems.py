"""Error bodies: every failure the API answers is a `Problem` (JSON), with `Retry-After` when
trying again later can help; the exception handlers map the serving path's errors onto them."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from segue.serving.api_metrics import ServingMetrics
from segue.serving.api_models import Problem
from segue.serving.recommender import DependencyUnavailable, PlaylistNotFound, RequestLimit, TrackNotFound
from segue.serving.serving_target import NotReady, PinRefused
from segue.settings import ServeSettings

_LOGGER = logging.getLogger(__name__)


class ApiProblem(Exception):
    """Raised anywhere in a request to answer `status` with a Problem body."""

    def __init__(self, status: int, error: str, detail: str, retry: bool = False):
        super().__init__(detail)
        self.status, self.error, self.detail, self.retry = status, error, detail, retry


class BodyTooLarge(Exception):
    pass


def problem_response(cfg: ServeSettings, status: int, error: str, detail: str, retry: bool = False) -> JSONResponse:
    body = Problem(error=error, detail=detail, retry_after_s=cfg.retry_after_s if retry else None)
    headers = {"Retry-After": str(cfg.retry_after_s)} if retry else None
    return JSONResponse(body.model_dump(exclude_none=True), status, headers=headers)


def too_large_body(limit: int) -> dict:
    return Problem(error="body too large", detail=f"request bodies are limited to {limit} bytes").model_dump()


def add_problem_handlers(app: FastAPI, cfg: ServeSettings, metrics: ServingMetrics) -> None:
    """The serving path's exceptions as Problem answers (404, 409, 413, 422, 503)."""

    def answer(e: ApiProblem) -> JSONResponse:
        return problem_response(cfg, e.status, e.error, e.detail, e.retry)

    @app.exception_handler(ApiProblem)
    async def _problem(request: Request, e: ApiProblem):
        return answer(e)

    @app.exception_handler(DependencyUnavailable)
    async def _unavailable(request: Request, e: DependencyUnavailable):
        metrics.dependency_failures.inc(e.dependency)
        _LOGGER.warning("dependency unavailable", extra={"dependency": e.dependency, "error": e.detail})
        return answer(ApiProblem(503, f"{e.dependency} unavailable", e.detail, retry=True))

    @app.exception_handler(NotReady)
    async def _not_ready(request: Request, e: NotReady):
        return answer(ApiProblem(503, "not ready", str(e), retry=True))

    @app.exception_handler(PlaylistNotFound)
    @app.exception_handler(TrackNotFound)
    async def _not_found(request: Request, e: LookupError):
        return answer(ApiProblem(404, "not found", str(e.args[0])))

    @app.exception_handler(PinRefused)
    async def _pin_refused(request: Request, e: PinRefused):
        return answer(ApiProblem(409, "not servable", str(e)))

    @app.exception_handler(RequestLimit)
    async def _limit(request: Request, e: RequestLimit):
        return JSONResponse({"detail": [{"loc": ["body", *e.field.split(".")], "msg": str(e), "type": "limit"}]},
                            422)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, e: BodyTooLarge):
        return JSONResponse(too_large_body(cfg.max_body_bytes), 413)
