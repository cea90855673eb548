"""Waits with a deadline that covers the whole call, for the stop path.

After SIGTERM to a whole process group (`timeout`, `kill -TERM -PGID`, systemd), Ray's own processes die together with
the driver, and a Ray call that needs them can block for ever: `ray.get(..., timeout=10)` of a reply that holds actor
handles waits in `_load_actor_class_from_gcs` for a GCS that is gone, a wait its timeout does not cover. Such a call
runs here in a daemon thread joined with a deadline, so the driver stops in bounded time whatever Ray does. No torch,
no Ray: the command line imports it cheaply.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable


def within(seconds: float, call: Callable[[], object], name: str = "bounded-stop") -> bool:
    """Run `call` (its exceptions ignored: this is clean-up) for at most `seconds`; True when it finished in time.
    When it did not, it is left running in its daemon thread, which does not keep the process from exiting."""
    finished = threading.Event()

    def run() -> None:
        with contextlib.suppress(Exception):
            call()
        finished.set()

    threading.Thread(target=run, name=name, daemon=True).start()
    return finished.wait(seconds)
