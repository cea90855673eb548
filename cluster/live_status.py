"""The live coordinators, found by name through Ray; every failure becomes a note, never an exception.

The service must answer in milliseconds while the coordinator may be busy running a generation,
so no request ever waits long on Ray: connecting happens in a background thread, each run's
`status()` call is kept in flight and its last answer reused for `ttl` seconds (and, while a
fresh one is pending, for up to `max_stale` seconds), and a request with nothing usable waits at
most `wait_s` before the caller falls back to the run folder.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cluster.api_models import RayState

NAMESPACE = "popvae"
PREFIX = "coordinator:"

log = logging.getLogger(__name__)


def actor_name(run_id: str) -> str:
    return f"{PREFIX}{run_id}"


@dataclass
class _Entry:
    handle: Any = None
    ref: Any = None
    sent_at: float = 0.0
    value: dict[str, Any] | None = None
    value_at: float = float("-inf")
    note: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class LiveCoordinators:
    """Status of coordinator actors in namespace "popvae" of the Ray cluster at `address` (None: no Ray)."""

    def __init__(
        self,
        address: str | None,
        ttl: float = 0.5,
        max_stale: float = 5.0,
        wait_s: float = 0.25,
        call_timeout: float = 5.0,
        retry_s: float = 10.0,
    ) -> None:
        self.address = address
        self.ttl, self.max_stale, self.wait_s, self.call_timeout, self.retry_s = ttl, max_stale, wait_s, call_timeout, retry_s
        self._state: RayState = "disabled" if address is None else "connecting"
        self._error: str | None = None
        self._entries: dict[str, _Entry] = {}
        self._entries_lock = threading.Lock()
        self._names: tuple[float, set[str]] = (float("-inf"), set())
        self._names_lock = threading.Lock()
        if address is not None:
            threading.Thread(target=self._connect_loop, name="ray-connect", daemon=True).start()

    @property
    def state(self) -> RayState:
        return self._state

    def _connect_loop(self) -> None:
        import ray

        while True:
            try:
                if not ray.is_initialized():
                    ray.init(address=self.address, namespace=NAMESPACE, log_to_driver=False, logging_level=logging.ERROR)
                self._state, self._error = "connected", None
                return
            except Exception as e:  # any failure to connect means "not live", retried later
                self._state, self._error = "unreachable", f"{type(e).__name__}: {e}".splitlines()[0]
                log.warning("Ray at %s unreachable (%s); retrying in %.0fs", self.address, self._error, self.retry_s)
                time.sleep(self.retry_s)

    def unavailable_reason(self) -> str | None:
        """Why no live status can be had at all, or None when Ray is connected."""
        if self._state == "disabled":
            return "no Ray address configured (--address or RAY_ADDRESS)"
        if self._state == "connecting":
            return f"still connecting to Ray at {self.address}"
        if self._state == "unreachable":
            return f"Ray at {self.address} unreachable: {self._error}"
        return None

    def run_ids(self) -> set[str]:
        """Runs whose coordinator actor is alive (cached for `ttl`)."""
        if self._state != "connected":
            return set()
        with self._names_lock:
            at, names = self._names
            if time.monotonic() - at < self.ttl:
                return names
            try:
                import ray

                actors = ray.util.list_named_actors(all_namespaces=True)
                names = {a["name"][len(PREFIX) :] for a in actors if a["namespace"] == NAMESPACE and a["name"].startswith(PREFIX)}
            except Exception as e:
                log.warning("listing named actors failed: %s", e)
                names = set()
            self._names = (time.monotonic(), names)
            return names

    def status(self, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
        """(the coordinator's status dict, None) or (None, why it could not be had)."""
        reason = self.unavailable_reason()
        if reason is not None:
            return None, reason
        with self._entries_lock:
            entry = self._entries.setdefault(run_id, _Entry())
        with entry.lock:
            return self._refresh(run_id, entry)

    def _refresh(self, run_id: str, entry: _Entry) -> tuple[dict[str, Any] | None, str | None]:
        import ray

        now = time.monotonic()
        if now - entry.value_at < self.ttl:
            return entry.value, None
        if entry.ref is not None and now - entry.sent_at > self.call_timeout:
            entry.ref, entry.note = None, f"coordinator did not answer within {self.call_timeout:.0f}s"
        if entry.ref is None:
            try:
                if entry.handle is None:
                    entry.handle = ray.get_actor(actor_name(run_id), namespace=NAMESPACE)
                entry.ref, entry.sent_at = entry.handle.status.remote(), now
            except Exception as e:  # ValueError when no such actor, RayActorError when it died
                entry.handle = None
                return self._stale_or(entry, now, f"no live coordinator for run {run_id!r} ({type(e).__name__})")
        usable = entry.value is not None and now - entry.value_at < self.max_stale
        ready, _ = ray.wait([entry.ref], timeout=0 if usable else self.wait_s)
        if not ready:
            return self._stale_or(entry, now, entry.note or f"coordinator did not answer within {self.wait_s:.2f}s")
        ref, entry.ref = entry.ref, None
        try:
            entry.value, entry.value_at, entry.note = ray.get(ref, timeout=0), time.monotonic(), None
        except Exception as e:
            entry.handle = None
            return self._stale_or(entry, now, f"coordinator call failed: {type(e).__name__}")
        return entry.value, None

    def _stale_or(self, entry: _Entry, now: float, note: str) -> tuple[dict[str, Any] | None, str | None]:
        if entry.value is not None and now - entry.value_at < self.max_stale:
            return entry.value, None
        return None, note
