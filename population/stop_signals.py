"""How the driver stops on SIGINT and SIGTERM: the signal becomes `Interrupted` in the main thread (the run ends as
"interrupted", resumable), also across `ray.init`, which installs its own SIGTERM handler. No torch, no Ray: the CLI
installs it before anything heavy is imported.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM reached the driver: the run stops at once, state "interrupted", resumable."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_installed = False
_received: int | None = None
_received_at: float | None = None  # time.monotonic() of the first stop signal


def _raise_interrupted(signum: int, _frame: object) -> None:
    global _received, _received_at
    _received, _received_at = signum, time.monotonic()
    for s in _STOP_SIGNALS:  # a second signal while stopping must not interrupt the clean-up
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


def as_interrupted(err: KeyboardInterrupt) -> Interrupted:
    """The `Interrupted` behind a KeyboardInterrupt: Ray's blocking calls (ray.get) replace the exception our
    handler raised with a plain KeyboardInterrupt; the signal it was for is remembered here."""
    if isinstance(err, Interrupted):
        return err
    return Interrupted(_received if _received is not None else signal.SIGINT)


def stop_requested() -> Interrupted | None:
    """The stop signal received so far, if any, also when its exception was lost (raised where Python had to ignore
    it, inside a Ray callback): after a SIGTERM to the whole process group, Ray's failures can come first."""
    return None if _received is None else Interrupted(_received)


def stop_time_left(budget_s: float) -> float:
    """Seconds left of a stop that must be done `budget_s` after the stop signal (all of it when none was seen)."""
    return budget_s - (0.0 if _received_at is None else time.monotonic() - _received_at)


def stop_on_signals() -> None:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread (instead of a traceback, or Ray's handler that
    exits from inside a C++ call). Called again after `ray.init`, which installs its own SIGTERM handler."""
    global _installed
    if threading.current_thread() is threading.main_thread():
        for s in _STOP_SIGNALS:
            signal.signal(s, _raise_interrupted)
        _installed = True


@contextlib.contextmanager
def signals_kept_while_ray_starts() -> Iterator[None]:
    """Around `ray.init`, which installs its own SIGTERM handler (it exits from wherever Python is): a SIGTERM or
    SIGINT in that window stops the run as `Interrupted` all the same. Its SystemExit is turned into one, and a signal
    whose exception Python had to ignore (raised inside an at-fork hook while Ray spawns its processes) is still
    seen: the wakeup fd records every signal at the C level, whichever Python handler ran. Our handlers are put back
    afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    unraisable = sys.unraisablehook

    def quiet_stops(event: Any) -> None:  # a stop Python had to drop is raised below: no "Exception ignored" trace
        if not isinstance(event.exc_value, (SystemExit, KeyboardInterrupt)):
            unraisable(event)

    sys.unraisablehook = quiet_stops
    try:
        try:
            yield
        except SystemExit as exit_:
            if exit_.code in _STOP_SIGNALS:
                raise Interrupted(int(exit_.code)) from None
            raise
        finally:
            signal.set_wakeup_fd(previous)
            sys.unraisablehook = unraisable
            restore_stop_handlers()
        try:
            received = reader.recv(64)
        except BlockingIOError:
            received = b""
        for signum in received:
            if signum in _STOP_SIGNALS:
                raise Interrupted(signum)
    finally:
        reader.close()
        writer.close()


def restore_stop_handlers() -> None:
    """Put `stop_on_signals`' handlers back if they were installed (after something, e.g. ray.init, replaced them)."""
    if _installed:
        stop_on_signals()
