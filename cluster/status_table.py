"""`popvae status`: the population as a compact table, fetched from the status service.

It talks to the service rather than to Ray so that the same command works from any machine that
can reach the service, with the same bearer token, and shows exactly what the API serves.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from popvae.cluster.service import TOKEN_ENV


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(pop: dict[str, Any]) -> Table:
    title = (
        f"run {pop['run_id']}  {pop['state']}  epoch {pop['epoch']}/{pop['epochs']}  "
        + (f"generation {pop['generation_seconds']:.2f} s  " if pop["generation_seconds"] is not None else "")
        + f"best #{pop['best_member'] or '-'}  ({pop['source']})"
    )
    table = Table(title=title, title_justify="left", caption=pop.get("note"), caption_justify="left", box=None, pad_edge=False)
    for name in ("#", "strategy", "tau", "loss", "recon", "kl_z1", "kl_z2", "val", "pat", "state", "node", "flags"):
        table.add_column(
            name, justify="right" if name in ("#", "tau", "loss", "recon", "kl_z1", "kl_z2", "val", "pat") else "left"
        )
    for m in pop["members"]:
        loss = m["loss"] or {}
        best = m["index"] == pop["best_member"]
        table.add_row(
            f"{'*' if best else ''}{m['index']}",
            m["strategy"],
            _num(m["tau"], 3),
            _num(loss.get("total")),
            _num(loss.get("reconstruction")),
            _num(loss.get("kl_z1")),
            _num(loss.get("kl_z2")),
            _num(m["val_loss"]),
            str(m["patience"]),
            f"{m['state']} {m['steps_done']}/{m['steps']}" if m["state"] == "training" and m.get("steps") else m["state"],
            (m["node_id"] or "-")[:8],
            ",".join(m["flags"]),
            style="bold" if best else None,
        )
    return table


def _jobs_table(body: dict[str, Any]) -> Table:
    table = Table(title=f"jobs of {body['run_id']}", title_justify="left", box=None, pad_edge=False)
    for name in ("job", "kind", "method", "state", "epoch", "updated", "error"):
        table.add_column(name, justify="right" if name == "epoch" else "left")
    for j in body["jobs"]:
        table.add_row(j["id"], j["kind"], j.get("method") or "", j["state"], f"{j.get('epoch') or 0}/{j.get('epochs') or '-'}",
                      (j.get("updated_at") or "")[:19].replace("T", " "), (j.get("error") or "")[:60],
                      style={"failed": "red", "running": "bold"}.get(j["state"]))
    for job_id in body.get("unreadable", []):
        table.add_row(job_id, "", "", "unreadable", "", "", "status.json could not be read", style="red")
    return table


class _Failure(Exception):
    pass


def _get(client: httpx.Client, url: str, path: str, params: dict[str, str], missing_ok: bool = False) -> dict[str, Any] | None:
    try:
        response = client.get(f"{url.rstrip('/')}{path}", params=params)
    except httpx.HTTPError as e:
        raise _Failure(f"cannot reach {url}: {e}") from e
    if response.status_code == 404 and missing_ok:
        return None
    if response.status_code != 200:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise _Failure(f"{response.status_code} from {url}: {detail}")
    return response.json()


def _view(client: httpx.Client, url: str, run: str | None, jobs: bool) -> tuple[Group, bool]:
    """The population (when the run has one) and, with `jobs`, its jobs; and whether the run is still going."""
    params = {"run": run} if run else {}
    pop = _get(client, url, "/population", params, missing_ok=jobs and run is not None)
    parts: list[Any] = [_table(pop)] if pop else []
    going = pop is not None and pop["state"] in ("running", "scoring")
    if jobs:
        listed = _get(client, url, "/jobs", {"run": pop["run_id"]} if pop else params)
        parts.append(_jobs_table(listed) if listed["jobs"] or listed.get("unreadable") else f"run {listed['run_id']}: no jobs")
        going = going or any(j["state"] in ("queued", "running") for j in listed["jobs"])
    return Group(*parts), going


def print_status(url: str, run: str | None = None, token: str | None = None, watch: float | None = None,
                 jobs: bool = False) -> int:
    """Print the population of `run` (default: the newest) served at `url`, with `jobs` its jobs too; with `watch`,
    redraw every `watch` seconds until the run and its jobs end or Ctrl-C. 0 on success, 1 with a message otherwise."""
    token = token or os.environ.get(TOKEN_ENV) or None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    console = Console(width=160)
    try:
        with httpx.Client(headers=headers, timeout=10) as client:
            view, going = _view(client, url, run, jobs)
            if not watch:
                console.print(view)
                return 0
            with Live(view, console=console, auto_refresh=False) as live:
                while going:
                    time.sleep(watch)
                    view, going = _view(client, url, run, jobs)
                    live.update(view, refresh=True)
    except _Failure as e:
        print(f"popvae status: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
