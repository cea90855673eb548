"""The read-only REST status service: population, history and jobs of the runs under one folder.

Handlers stay thin: `Runs` (over `RunStore` and `LiveCoordinators`) does the reading, and two
exception handlers turn its failures into 404 / 503 JSON, so that no request is answered
with a 500. It binds to loopback unless a bearer token protects it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from popvae.cluster.api_models import (
    ID_PATTERN,
    ErrorBody,
    Health,
    HistoryPage,
    HistoryQuery,
    JobList,
    Population,
    RunList,
    RunQuery,
)
from popvae.cluster.dashboard import add_dashboard
from popvae.cluster.live_status import LiveCoordinators
from popvae.cluster.run_catalog import Runs
from popvae.cluster.run_store import NotFound, Refused, RunStore, Unreadable
from popvae.population.config import ConfigError
from popvae.population.contract import JobStatus

TOKEN_ENV = "POPVAE_API_TOKEN"

_ERRORS = {
    403: {"model": ErrorBody, "description": "a file of the run links out of its folder (symlink or hard link): refused"},
    404: {"model": ErrorBody, "description": "unknown run, member or job"},
    503: {"model": ErrorBody, "description": "the run's files are unreadable, or a run without folder has a silent coordinator"},
}
_UNAUTHORIZED = {401: {"model": ErrorBody, "description": "missing or wrong bearer token"}}


_BEARER = HTTPBearer(auto_error=False, description=f"required when the service was started with {TOKEN_ENV} set")


def _bearer_guard(token: str) -> Callable[..., None]:
    def guard(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if creds is None or not secrets.compare_digest(creds.credentials.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return guard


def create_app(runs_root: Path, ray_address: str | None = None, token: str | None = None) -> FastAPI:
    """The app over `runs_root`; `ray_address` None means run folders only; `token` set means bearer auth."""
    runs = Runs(RunStore(Path(runs_root)), LiveCoordinators(ray_address))
    app = FastAPI(
        title="popvae status",
        version="1",
        description="Read-only status of popvae populations and jobs. The dashboard is at /, this API's pages at /docs.",
        docs_url=None,  # served by add_dashboard from the vendored swagger-ui files: no CDN
        redoc_url=None,
    )
    guarded = (
        {"dependencies": [Depends(_bearer_guard(token))], "responses": {**_ERRORS, **_UNAUTHORIZED}}
        if token
        else {"responses": _ERRORS}
    )

    roots = sorted({str(Path(runs_root).absolute()), os.path.realpath(runs_root)}, key=len, reverse=True)

    def detail(exc: Exception) -> str:
        """The message without the server's paths: the runs root reads as RUNS_ROOT."""
        text = str(exc)
        for root in roots:
            text = text.replace(root, "RUNS_ROOT")
        return text

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": detail(exc)}, status_code=404)

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"detail": detail(exc)}, status_code=403)

    @app.exception_handler(Unreadable)
    async def _unreadable(_: Request, exc: Unreadable) -> JSONResponse:
        return JSONResponse({"detail": detail(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> Health:
        """Liveness; open without a token so that orchestrators can probe it."""
        shown = str(runs.store.root) if token is None else runs.store.root.name  # a public service shows no server path
        return Health(runs_root=shown, ray=runs.live.state, ray_note=runs.live.unavailable_reason())

    @app.get("/runs", response_model=RunList, **guarded, tags=["runs"])
    def list_runs() -> RunList:
        return RunList(runs=runs.summaries())

    @app.get("/population", response_model=Population, **guarded, tags=["runs"])
    async def population(q: Annotated[RunQuery, Query()]) -> Response:
        """The population now: from the live coordinator when one answers, else from status.json (see `source`)."""
        # async (no thread hop): the hot path only reads memory and stats one file, it never waits on Ray
        return Response(runs.population_json(runs.resolve(q.run, population=True)), media_type="application/json")

    @app.get("/population/history", response_model=HistoryPage, **guarded, tags=["runs"])
    def history(q: Annotated[HistoryQuery, Query()]) -> HistoryPage:
        """Rows of history.parquet, filtered (an inverted epoch range matches nothing), then paged."""
        run_id = runs.resolve(q.run, population=True)
        rows = runs.history(run_id, q.member, q.epoch_min, q.epoch_max)
        return HistoryPage(
            run_id=run_id, total=len(rows), offset=q.offset, limit=q.limit, rows=rows[q.offset : q.offset + q.limit]
        )

    @app.get("/jobs", response_model=JobList, **guarded, tags=["jobs"])
    def list_jobs(q: Annotated[RunQuery, Query()]) -> JobList:
        return runs.jobs(runs.resolve(q.run))

    @app.get("/jobs/{job_id}", response_model=JobStatus, **guarded, tags=["jobs"])
    def get_job(job_id: Annotated[str, PathParam(pattern=ID_PATTERN)], q: Annotated[RunQuery, Query()]) -> JobStatus:
        return runs.job(q.run, job_id)

    add_dashboard(app, runs, guarded)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_serve(runs_root: Path, host: str, port: int) -> None:
    """What `serve` needs, checked before uvicorn starts (it would report a busy port only after startup, with its
    own exit code): ConfigError, one line."""
    if not Path(runs_root).is_dir():
        raise ConfigError(f"--runs-root {runs_root} is not a folder")
    if not is_loopback(host) and not os.environ.get(TOKEN_ENV):
        raise ConfigError(f"refusing to bind {host} without a bearer token: set {TOKEN_ENV}")
    try:
        socket.create_server((host, port)).close()
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def serve(runs_root: Path, host: str = "127.0.0.1", port: int = 8000, ray_address: str | None = None) -> None:
    """Run the service with uvicorn (`check_serve` first: SystemExit with its line); a non-loopback bind needs the
    bearer token from $POPVAE_API_TOKEN."""
    import uvicorn

    try:
        check_serve(runs_root, host, port)
    except ConfigError as err:
        raise SystemExit(f"popvae serve: {err}") from None
    app = create_app(Path(runs_root), ray_address or os.environ.get("RAY_ADDRESS") or None, os.environ.get(TOKEN_ENV) or None)
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    print(f"popvae serve: listening on {url} (dashboard at /, the API's pages at /docs); Ctrl-C stops", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
