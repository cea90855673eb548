"""The web side of the status service: the dashboard page at `/`, offline Swagger at `/docs`, and the REST a page needs
beyond the population (a run's overview, lineage and files).

Everything the browser loads ships in the package (`cluster/static/`: the page's own HTML, JS and CSS, and the
vendored `swagger-ui-dist` files), so both pages work with no internet. The page itself is open; the data it
fetches is guarded like every other endpoint (the page asks for the bearer token on a 401).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from popvae.cluster.api_models import ID_PATTERN, JobHistory, LineagePage, RunOverview
from popvae.cluster.run_catalog import Runs
from popvae.cluster.run_files import pictures, read_json_or, reports, run_kind, safe_file
from popvae.cluster.run_store import NotFound, Refused, Unreadable
from popvae.population import run_folder as rf
from popvae.population.contract import finite_or_none, migrate_summary

STATIC = Path(__file__).parent / "static"
_FILE_TYPES = {"image/png": {}, "image/jpeg": {}, "image/svg+xml": {}, "text/markdown": {}, "text/csv": {}}


def add_dashboard(app: FastAPI, runs: Runs, guarded: dict[str, Any]) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js", swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    @app.get("/runs/{run_id}/summary", response_model=RunOverview, **guarded, tags=["runs"])
    def run_overview(run_id: Annotated[str, PathParam(pattern=ID_PATTERN)]) -> RunOverview:
        """What the run is (kind, config), its status when it has a population, its summary once it ended, and the
        pictures and reports under its folder (fetch them from /runs/{run_id}/files/{path})."""
        run_dir = runs.store.run_dir(run_id)
        try:
            status = runs.store.status(run_id)
        except Refused:
            raise
        except (NotFound, Unreadable):
            status = None
        config = read_json_or(run_dir, rf.CONFIG, {})
        summary = migrate_summary(read_json_or(run_dir, rf.SUMMARY, None))  # epochs from 1, also in older folders
        return RunOverview(
            run_id=run_id, kind=run_kind(run_dir), status=status, config=config if isinstance(config, dict) else {},
            summary=summary if isinstance(summary, dict) else None, pictures=pictures(run_dir), reports=reports(run_dir),
        )

    @app.get("/runs/{run_id}/lineage", response_model=LineagePage, **guarded, tags=["runs"])
    def run_lineage(run_id: Annotated[str, PathParam(pattern=ID_PATTERN)]) -> LineagePage:
        """lineage.json: per generation the best member, who received whose weights, tau before and after."""
        return LineagePage(run_id=run_id, generations=runs.store.lineage(run_id))

    @app.get("/runs/{run_id}/jobs/{job_id}/history", response_model=JobHistory, **guarded, tags=["jobs"])
    def job_history(run_id: Annotated[str, PathParam(pattern=ID_PATTERN)],
                    job_id: Annotated[str, PathParam(pattern=ID_PATTERN)]) -> JobHistory:
        """A job's rows per epoch (a robust job: its training loss parts): what the dashboard charts for it."""
        return JobHistory(run_id=run_id, job_id=job_id, rows=finite_or_none(runs.store.job_history(run_id, job_id)))

    files_guarded = {**guarded, "responses": {**guarded["responses"], 200: {"content": _FILE_TYPES,
                                                                              "description": "the file"}}}

    @app.get("/runs/{run_id}/files/{path:path}", response_class=FileResponse, **files_guarded, tags=["runs"])
    def run_file(run_id: Annotated[str, PathParam(pattern=ID_PATTERN)], path: str) -> FileResponse:
        """A picture (PNG, JPEG, SVG), report (Markdown) or CSV inside the run folder; nothing outside it."""
        file, media = safe_file(runs.store.run_dir(run_id), path)
        return FileResponse(file, media_type=media, headers={"Cache-Control": "no-cache"})
