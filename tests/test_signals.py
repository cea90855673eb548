"""A SIGTERM while Ray starts stops the run as Interrupted, whichever handler Ray left and even when Python had to
ignore the handler's exception (the race CI met: a SystemExit raised inside an at-fork hook is dropped)."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from popvae.population.runlock import Interrupted, signals_kept_while_ray_starts


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


def test_no_signal_no_interruption(sigterm_restored):
    with signals_kept_while_ray_starts():
        pass
