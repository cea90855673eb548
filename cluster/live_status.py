"""The live coordinators, found by name through Ray by a poller process; requests only read its latest answers.

The service must answer in milliseconds while a coordinator may be busy running a generation, and a request
must never wait on Ray. It must also outlive the cluster: a Ray driver whose head (GCS) is gone for 60 s is ended
by Ray itself, so the service never connects to Ray in its own process. A child process connects, lists the named
coordinator actors, keeps one `status()` call in flight per run and sends what it has every `interval`; a thread
here keeps the newest snapshot, and `status(run_id)` is a dictionary lookup. A poller that ends or falls silent
(the head went away) is replaced after `retry_s`, so a restarted head is found again. Every Ray failure becomes
a note that says why the caller has to fall back to the run folder.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from popvae.cluster.api_models import RayState
from popvae.population.contract import NAMESPACE, coordinator_name, run_id_of

log = logging.getLogger(__name__)


@dataclass
class _Poll:
    """One run's call as the poller holds it."""

    handle: Any = None
    ref: Any = None
    sent_at: float = 0.0
    value: dict[str, Any] | None = None
    value_at: float = float("-inf")
    note: str | None = None


@dataclass(frozen=True)
class _Seen:
    """One run's last answer as the service holds it (`value_at` on this process's monotonic clock)."""

    value: dict[str, Any] | None
    value_at: float
    note: str | None


def missing_ray_auth() -> str | None:
    """What this process lacks to present a Ray token (Ray >= 2.59 token authentication), or None."""
    from pathlib import Path

    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not os.environ.get("RAY_AUTH_TOKEN") and not Path(path or Path.home() / ".ray" / "auth_token").is_file():
        return "set RAY_AUTH_TOKEN to the cluster's token (RAY_AUTH_MODE=token is set)"
    return None


def connect_failure(err: Exception) -> str:
    """One line for a failed ray.init: a token-authenticated cluster refuses a client without its token with a bare
    ConnectionError (the real cause is only in Ray's C++ log), so name the variables when they are not set."""
    first = f"{type(err).__name__}: {err}".splitlines()[0]
    if "Authentication" in type(err).__name__ or "auth" in str(err).lower():
        return f"authentication failed ({first}); check RAY_AUTH_TOKEN is the cluster's token"
    missing = missing_ray_auth()
    if missing is not None:
        return f"{first} (if the cluster uses token authentication, the Ray >= 2.59 default: {missing})"
    return f"{first} (RAY_AUTH_TOKEN is set: check it is the cluster's token and the address is right)"


class LiveCoordinators:
    """Coordinator actors (named by `contract.coordinator_name` in `contract.NAMESPACE`) of the Ray cluster at `address`.

    `address` None means no Ray at all. Answers are refreshed every `interval` seconds and trusted for
    `max_stale` seconds; a call unanswered after `call_timeout` seconds is abandoned and sent again. A poller that
    has not connected within `connect_timeout` seconds, or has sent nothing for `silent_after` seconds once
    connected, is ended; the next starts `retry_s` seconds later (doubling while none connects, to `max_retry_s`).
    """

    def __init__(
        self, address: str | None, interval: float = 0.5, max_stale: float = 5.0, call_timeout: float = 5.0,
        retry_s: float = 10.0, max_retry_s: float = 60.0, connect_timeout: float = 60.0, silent_after: float = 10.0,
    ) -> None:
        self.address = address
        self.interval, self.max_stale, self.call_timeout, self.retry_s = interval, max_stale, call_timeout, retry_s
        self.max_retry_s, self.connect_timeout, self.silent_after = max_retry_s, connect_timeout, silent_after
        self._state: RayState = "disabled" if address is None else "connecting"
        self._error: str | None = None
        self._seen: dict[str, _Seen] = {}
        if address is not None:
            threading.Thread(target=self._supervise, name="ray-poller-supervisor", daemon=True).start()

    @property
    def state(self) -> RayState:
        return self._state

    def unavailable_reason(self) -> str | None:
        """Why no live status can be had at all, or None when Ray is connected."""
        return {
            "disabled": "no Ray address configured (--address or RAY_ADDRESS)",
            "connecting": f"still connecting to Ray at {self.address}",
            "unreachable": f"Ray at {self.address} unreachable: {self._error}",
        }.get(self._state)

    def run_ids(self) -> set[str]:
        """Runs whose coordinator actor was alive at the last poll."""
        return set(self._seen)

    def status(self, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(the coordinator's last status dict, None), or (None, why there is none)."""
        reason = self.unavailable_reason()
        if reason is not None:
            return None, reason
        seen = self._seen.get(run_id)
        if seen is None:
            return None, f"no live coordinator for run {run_id!r}"
        if seen.value is not None and time.monotonic() - seen.value_at < self.max_stale:
            return seen.value, None
        return None, seen.note or f"the coordinator of run {run_id!r} has not answered yet"

    def _supervise(self) -> None:
        """Start a poller, follow it until it ends or falls silent, end it, wait, start the next. The wait doubles
        while no poller connects (up to `max_retry_s`: each try starts a process that imports Ray)."""
        spawn = multiprocessing.get_context("spawn")  # a fork would copy the service's threads and their locks
        delay = self.retry_s
        while True:
            receive, send = spawn.Pipe(duplex=False)
            poller = spawn.Process(target=_poll, args=(self.address, self.interval, self.call_timeout, self.silent_after, send),
                                   name="popvae-ray-poller", daemon=True)
            poller.start()
            send.close()  # the child's copy alone keeps the pipe open: its exit reads as EOF here
            connected = self._follow(receive)
            receive.close()
            poller.kill()
            poller.join()
            self._seen = {}
            if connected:  # it had worked: the next may well work again
                delay = self.retry_s
            time.sleep(delay)
            delay = min(2 * delay, max(self.retry_s, self.max_retry_s))

    def _follow(self, receive: Connection) -> bool:
        """Take the poller's messages until it ends or is silent too long; leave the state saying why. True when it
        had connected."""
        connected = False
        while True:
            wait = self.silent_after if connected else self.connect_timeout
            if not receive.poll(wait):
                self._unreachable(f"no answer within {wait:.0f}s" if connected else f"no connection within {wait:.0f}s")
                return connected
            try:
                kind, body = receive.recv()
            except (EOFError, OSError):
                self._unreachable("the connection to Ray ended (the head may have stopped)")
                return connected
            if kind == "unreachable":
                self._unreachable(body)
                return connected
            if kind == "connected":
                connected = True
                if self._state == "unreachable":
                    log.warning("Ray at %s reachable again", self.address)
                self._state, self._error = "connected", None
            elif kind == "polls":
                now = time.monotonic()
                self._seen = {run: _Seen(value, now - age, note) for run, (value, age, note) in body.items()}

    def _unreachable(self, why: str) -> None:
        if (self._state, self._error) != ("unreachable", why):
            log.warning("Ray at %s unreachable (%s); trying again later", self.address, why)
        self._state, self._error = "unreachable", why


def _poll(address: str, interval: float, call_timeout: float, give_up_after: float, send: Connection) -> None:
    """The poller process: connect, then send every run's last answer each `interval`, until the service is gone or
    polling has failed for `give_up_after` seconds in a row (said as "unreachable" before it ends)."""
    # The service alone decides when this process ends: Ctrl-C in its terminal reaches the whole process group, and
    # Ray's C++ failure handler would print a crash-style stack for the SIGTERM the service ends it with
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    import ray

    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as e:  # any failure to connect means "not live"; the service starts another poller later
        send.send(("unreachable", connect_failure(e)))
        return
    polls: dict[str, _Poll] = {}
    failing_since: float | None = None
    try:
        send.send(("connected", None))
        while True:
            started = time.monotonic()
            try:
                polls = _poll_once(ray, polls, interval, call_timeout)
                failing_since = None
            except Exception as e:  # a GCS hiccup: keep the last answers (they age out) for a while, try again
                failing_since = failing_since or started
                if started - failing_since >= give_up_after:
                    send.send(("unreachable", f"polling failed for {give_up_after:.0f}s ({type(e).__name__}: {e})"))
                    return
            now = time.monotonic()
            send.send(("polls", {run: (p.value, now - p.value_at if p.value is not None else 0.0, p.note)
                                 for run, p in polls.items()}))
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except (BrokenPipeError, EOFError, OSError):  # the service is gone: so is this poller
        return


def _poll_once(ray: Any, polls: dict[str, _Poll], interval: float, call_timeout: float) -> dict[str, _Poll]:
    """One round: the coordinators alive now, each with one status call in flight; the answers that came in."""
    actors = ray.util.list_named_actors(all_namespaces=True)
    alive = {run_id for a in actors if a["namespace"] == NAMESPACE and (run_id := run_id_of(a["name"])) is not None}
    polls = {run_id: polls.get(run_id) or _Poll() for run_id in alive}
    now = time.monotonic()
    for run_id, poll in polls.items():
        if poll.ref is not None and now - poll.sent_at > call_timeout:
            poll.ref, poll.handle, poll.note = None, None, f"the coordinator did not answer within {call_timeout:.0f}s"
        if poll.ref is None:
            try:
                poll.handle = poll.handle or ray.get_actor(coordinator_name(run_id), namespace=NAMESPACE)
                poll.ref, poll.sent_at = poll.handle.status.remote(), now
            except Exception as e:  # it died between the listing and now
                poll.handle, poll.note = None, f"the coordinator is unreachable ({type(e).__name__})"
    in_flight = {poll.ref: poll for poll in polls.values() if poll.ref is not None}
    if in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=interval)
        for ref in ready:
            poll = in_flight[ref]
            poll.ref = None
            try:
                poll.value, poll.value_at, poll.note = ray.get(ref), time.monotonic(), None
            except Exception as e:  # the actor died while answering
                poll.handle, poll.note = None, f"the coordinator's status call failed ({type(e).__name__})"
    return polls
