"""`deadline.within`: a clean-up call bounded as a whole, whatever it waits on."""

from __future__ import annotations

import threading

from popvae.population.deadline import within


def test_a_call_that_finishes_is_waited_for_and_its_error_ignored():
    done = []
    assert within(30.0, lambda: done.append(1)) and done == [1]
    assert within(30.0, lambda: 1 / 0)  # clean-up: a failing step does not stop the stop


def test_a_call_that_blocks_is_left_behind_in_a_daemon_thread():
    never = threading.Event()
    assert not within(0.05, never.wait, name="blocked-forever")
    left = [t for t in threading.enumerate() if t.name == "blocked-forever"]
    assert left and all(t.daemon for t in left)  # it does not keep the process from exiting
    never.set()
