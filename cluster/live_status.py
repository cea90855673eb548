"""The live coordinators, found by name through Ray by one background thread; requests only read its results.

The service must answer in milliseconds while a coordinator may be busy running a generation, and a
request must never wait on Ray. So one daemon thread connects, lists the named coordinator actors, keeps
one `status()` call in flight per run and stores each answer; `status(run_id)` is a dictionary lookup.
Every Ray failure becomes a note that says why the caller has to fall back to the run folder.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from popvae.cluster.api_models import RayState
from popvae.population.contract import NAMESPACE, coordinator_name, run_id_of

log = logging.getLogger(__name__)


@dataclass
class _Poll:
    handle: Any = None
    ref: Any = None
    sent_at: float = 0.0
    value: dict[str, Any] | None = None
    value_at: float = float("-inf")
    note: str | None = None


def missing_ray_auth() -> str | None:
    """What this process lacks to present a Ray token (Ray >= 2.59 token authentication), or None."""
    import os
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
    `max_stale` seconds; a call unanswered after `call_timeout` seconds is abandoned and sent again.
    """

    def __init__(
        self, address: str | None, interval: float = 0.5, max_stale: float = 5.0, call_timeout: float = 5.0, retry_s: float = 10.0
    ) -> None:
        self.address = address
        self.interval, self.max_stale, self.call_timeout, self.retry_s = interval, max_stale, call_timeout, retry_s
        self._state: RayState = "disabled" if address is None else "connecting"
        self._error: str | None = None
        self._polls: dict[str, _Poll] = {}
        if address is not None:
            threading.Thread(target=self._run, name="ray-coordinators", daemon=True).start()

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
        return set(self._polls)

    def status(self, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(the coordinator's last status dict, None), or (None, why there is none)."""
        reason = self.unavailable_reason()
        if reason is not None:
            return None, reason
        poll = self._polls.get(run_id)
        if poll is None:
            return None, f"no live coordinator for run {run_id!r}"
        if poll.value is not None and time.monotonic() - poll.value_at < self.max_stale:
            return poll.value, None
        return None, poll.note or f"the coordinator of run {run_id!r} has not answered yet"

    def _run(self) -> None:
        import ray

        while not ray.is_initialized():
            try:
                ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.ERROR)
            except Exception as e:  # any failure to connect means "not live"; retried
                self._state, self._error = "unreachable", connect_failure(e)
                log.warning("Ray at %s unreachable (%s); retrying in %.0fs", self.address, self._error, self.retry_s)
                time.sleep(self.retry_s)
        self._state, self._error = "connected", None
        while True:
            started = time.monotonic()
            try:
                self._poll_once(ray)
            except Exception as e:  # a GCS hiccup: keep the last answers (they age out), try again
                log.warning("polling coordinators failed: %s", e)
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _poll_once(self, ray: Any) -> None:
        actors = ray.util.list_named_actors(all_namespaces=True)
        alive = {run_id for a in actors if a["namespace"] == NAMESPACE and (run_id := run_id_of(a["name"])) is not None}
        polls = {run_id: self._polls.get(run_id) or _Poll() for run_id in alive}
        now = time.monotonic()
        for run_id, poll in polls.items():
            if poll.ref is not None and now - poll.sent_at > self.call_timeout:
                poll.ref, poll.handle, poll.note = None, None, f"the coordinator did not answer within {self.call_timeout:.0f}s"
            if poll.ref is None:
                try:
                    poll.handle = poll.handle or ray.get_actor(coordinator_name(run_id), namespace=NAMESPACE)
                    poll.ref, poll.sent_at = poll.handle.status.remote(), now
                except Exception as e:  # it died between the listing and now
                    poll.handle, poll.note = None, f"the coordinator is unreachable ({type(e).__name__})"
        in_flight = {poll.ref: poll for poll in polls.values() if poll.ref is not None}
        if in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=self.interval)
            for ref in ready:
                poll = in_flight[ref]
                poll.ref = None
                try:
                    poll.value, poll.value_at, poll.note = ray.get(ref), time.monotonic(), None
                except Exception as e:  # the actor died while answering
                    poll.handle, poll.note = None, f"the coordinator's status call failed ({type(e).__name__})"
        self._polls = polls  # one assignment: readers see the old or the new dict, never a half-built one
