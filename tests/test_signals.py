"""A SIGTERM while Ray starts stops the run as Interrupted, whichever handler Ray left and even when Python had to
ignore the handler's exception (the race CI met: a SystemExit raised inside an at-fork hook is dropped)."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from popvae.population.stop_signals import Interrupted, signals_kept_while_ray_starts


@pytest.fixture
def sigterm_restored():
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_ray_style_exit_becomes_interrupted(sigterm_restored):
    with pytest.raises(Interrupted) as caught, signals_kept_while_ray_starts():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # what ray.init installs
        os.kill(os.getpid(), signal.SIGTERM)
    assert caught.value.exit_code == 143


def test_a_signal_whose_exception_was_lost_still_stops(sigterm_restored):
    with pytest.raises(Interrupted) as caught, signals_kept_while_ray_starts():
        signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the handler ran, its exception was ignored
        os.kill(os.getpid(), signal.SIGTERM)
    assert caught.value.exit_code == 143


def test_a_dropped_stop_leaves_no_trace_on_stderr(sigterm_restored, capfd):
    """What CI saw: Ray's handler fired inside logging's at-fork hook and Python printed 'Exception ignored ...'."""

    def dropped() -> None:  # how Python reports an exception it cannot raise (an at-fork hook, a finaliser)
        sys.unraisablehook(type("Event", (), {"exc_type": SystemExit, "exc_value": SystemExit(15), "exc_traceback": None,
                                              "err_msg": None, "object": None})())

    with pytest.raises(Interrupted), signals_kept_while_ray_starts():
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        os.kill(os.getpid(), signal.SIGTERM)
        dropped()
    assert "Exception ignored" not in capfd.readouterr().err


def test_no_signal_no_interruption(sigterm_restored):
    with signals_kept_while_ray_starts():
        pass
