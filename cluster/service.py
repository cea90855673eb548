"""The read-only REST status service: population, history and jobs of the runs under one folder.

Handlers stay thin: `Runs` (over `RunStore` and `LiveCoordinators`) does the reading, and two
exception handlers turn its failures into 404 / 503 JSON, so that no request is answered
with a 500. It binds to loopback unless a bearer token protects it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cluster.api_models import ErrorBody, Health, HistoryPage, Job, JobList, Population, RunList
from cluster.live_status import LiveCoordinators
from cluster.run_catalog import Runs
from cluster.run_store import ID_PATTERN, NotFound, RunStore, Unreadable

TOKEN_ENV = "POPVAE_API_TOKEN"

RunParam = Annotated[
    str | None, Query(pattern=ID_PATTERN, description="run id (folder name); default: the most recently updated run")
]
_ERRORS = {
    401: {"model": ErrorBody, "description": "missing or wrong bearer token"},
    404: {"model": ErrorBody, "description": "unknown run, member or job"},
    503: {"model": ErrorBody, "description": "the run's files are unreadable or not written yet"},
}


_BEARER = HTTPBearer(auto_error=False, description=f"required when the service was started with {TOKEN_ENV} set")


def _bearer_guard(token: str | None):
    def guard(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if token is None:
            return
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return guard


def _epoch_range_error(epoch_min: int, epoch_max: int) -> RequestValidationError:
    msg = f"epoch_min ({epoch_min}) must not exceed epoch_max ({epoch_max})"
    return RequestValidationError([{"type": "value_error", "loc": ("query", "epoch_min"), "msg": msg, "input": epoch_min}])


def create_app(runs_root: Path, ray_address: str | None = None, token: str | None = None) -> FastAPI:
    """The app over `runs_root`; `ray_address` None means run folders only; `token` set means bearer auth."""
    runs = Runs(RunStore(Path(runs_root)), LiveCoordinators(ray_address))
    app = FastAPI(
        title="popvae status",
        version="1",
        description="Read-only status of popvae populations and jobs.",
        responses=_ERRORS,
    )
    authed = [Depends(_bearer_guard(token))]

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Unreadable)
    async def _unreadable(_: Request, exc: Unreadable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> Health:
        """Liveness; open without a token so that orchestrators can probe it."""
        return Health(runs_root=str(runs.store.root), ray=runs.live.state, ray_note=runs.live.unavailable_reason())

    @app.get("/runs", response_model=RunList, dependencies=authed, tags=["runs"])
    def list_runs() -> RunList:
        return RunList(runs=runs.summaries())

    @app.get("/population", response_model=Population, dependencies=authed, tags=["runs"])
    def population(run: RunParam = None) -> Population:
        return runs.population(runs.resolve(run))

    @app.get("/population/history", response_model=HistoryPage, dependencies=authed, tags=["runs"])
    def history(
        run: RunParam = None,
        member: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
        epoch_min: Annotated[int | None, Query(ge=0, le=1_000_000_000)] = None,
        epoch_max: Annotated[int | None, Query(ge=0, le=1_000_000_000)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> HistoryPage:
        if epoch_min is not None and epoch_max is not None and epoch_min > epoch_max:
            raise _epoch_range_error(epoch_min, epoch_max)
        run_id = runs.resolve(run)
        rows = runs.history(run_id, member, epoch_min, epoch_max)
        return HistoryPage(run_id=run_id, total=len(rows), offset=offset, limit=limit, rows=rows[offset : offset + limit])

    @app.get("/jobs", response_model=JobList, dependencies=authed, tags=["jobs"])
    def list_jobs(run: RunParam = None) -> JobList:
        return runs.jobs(runs.resolve(run))

    @app.get("/jobs/{job_id}", response_model=Job, dependencies=authed, tags=["jobs"])
    def get_job(job_id: Annotated[str, PathParam(pattern=ID_PATTERN)], run: RunParam = None) -> Job:
        return runs.job(run, job_id)

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(runs_root: Path, host: str = "127.0.0.1", port: int = 8000, ray_address: str | None = None) -> None:
    """Run the service with uvicorn; a non-loopback bind needs the bearer token from $POPVAE_API_TOKEN."""
    import uvicorn

    token = os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        raise SystemExit(f"popvae serve: refusing to bind {host} without a bearer token: set {TOKEN_ENV}")
    app = create_app(Path(runs_root), ray_address or os.environ.get("RAY_ADDRESS") or None, token)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
