"""Schemathesis against the service's own OpenAPI schema: every generated request, valid or not (a missing token
included), must get a documented, schema-conforming answer and never a server error (all default checks)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from fake_runs import make_run
from hypothesis import HealthCheck, settings

from popvae.cluster.service import create_app

TOKEN = "schemathesis-token"
_ROOT = tempfile.TemporaryDirectory(prefix="popvae-schemathesis-")
make_run(Path(_ROOT.name), "older", mtime=1_000_000)
make_run(Path(_ROOT.name), "newest", epochs=4, members=3, jobs=("job-a",), mtime=2_000_000)

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(Path(_ROOT.name), token=TOKEN))


@schema.auth()
class BearerToken:
    def get(self, case, ctx) -> str:
        return TOKEN

    def set(self, case, data: str, ctx) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_and_never_errors(case) -> None:
    case.call_and_validate()
