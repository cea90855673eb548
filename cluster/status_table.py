"""`popvae status`: the population as a compact table, fetched from the status service.

It talks to the service rather than to Ray so that the same command works from any machine that
can reach the service, with the same bearer token, and shows exactly what the API serves.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from popvae.cluster.service import TOKEN_ENV


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(pop: dict[str, Any]) -> Table:
    title = (
        f"run {pop['run_id']}  {pop['state']}  epoch {pop['epoch']}/{pop['epochs']}  "
        f"generation {_num(pop['generation_seconds'])}s  best #{pop['best_member'] or '-'}  ({pop['source']})"
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
            m["state"],
            (m["node_id"] or "-")[:8],
            ",".join(m["flags"]),
            style="bold" if best else None,
        )
    return table


def print_status(url: str, run: str | None = None, token: str | None = None) -> int:
    """Print the population of `run` (default: the newest) served at `url`; 0 on success, 1 with a message otherwise."""
    token = token or os.environ.get(TOKEN_ENV) or None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {"run": run} if run else {}
    try:
        response = httpx.get(f"{url.rstrip('/')}/population", params=params, headers=headers, timeout=10)
    except httpx.HTTPError as e:
        print(f"popvae status: cannot reach {url}: {e}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        print(f"popvae status: {response.status_code} from {url}: {detail}", file=sys.stderr)
        return 1
    Console(width=160).print(_table(response.json()))
    return 0
