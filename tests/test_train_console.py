"""`popvae train`'s console (issue 12, item 3): in a terminal, a live table of the members; Ctrl-C stops with the
resume command and no traceback; a finished run names its folder, the dashboard and TensorBoard commands; Ray's
start-up notes stay off the screen."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

POPVAE = str(Path(sys.executable).with_name("popvae"))
RAY_CHATTER = ("Token authentication", "Started a local Ray instance", "RAY_AUTH_MODE", "Connecting to existing Ray")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def _epoch(run: Path) -> int:
    try:
        return int(json.loads((run / "status.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}


def test_live_console_ctrl_c_then_resume_to_the_end(ray_session, tmp_path):
    """Ctrl-C on a run with a Ray of its own, then a resume that joins the session's Ray: the console hides both
    paths' Ray notes ("Started a local Ray instance", "Connecting to existing Ray")."""
    run = tmp_path / "runs" / "tiny"
    args = ["--dataset", "synthetic", "--members", "2", "--steps-per-epoch", "1", "--num-cpus", "2"]
    master, slave = pty.openpty()  # a terminal, as a person sees it: the table refreshes in place
    proc = subprocess.Popen([POPVAE, "train", "--run-dir", str(run), "--epochs", "400", *args],
                            stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=_env(), close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not (_epoch(run) >= 2 and "linear_increase" in ANSI.sub("", b"".join(chunks).decode(errors="replace"))):
            assert proc.poll() is None and time.monotonic() < deadline, b"".join(chunks).decode(errors="replace")
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)
    os.close(master)
    screen = ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    assert proc.returncode == 130, screen
    assert "tau used -> next" in screen and "val loss" in screen and "ETA" in screen, screen
    assert re.search(r"\*?1\s+fixed\s+\d\.\d{3} -> \d\.\d{3}", screen), screen  # member 1's row
    assert "linear_increase" in screen and "stopped" in screen, screen
    assert f"continue with: popvae train --resume {run}" in screen and "Traceback" not in screen, screen
    assert not any(chatter in screen for chatter in RAY_CHATTER), screen

    done = _epoch(run)
    address = ray_session.get_runtime_context().gcs_address
    finished = subprocess.run([POPVAE, "train", "--resume", str(run), "--epochs", str(done + 1), "--address", address],
                              capture_output=True, text=True, env=_env(), timeout=120)
    assert finished.returncode == 0, finished.stderr
    assert "tau used -> next" in finished.stderr and f"epochs done {done + 1}/{done + 1}" in finished.stderr
    assert "done" in finished.stderr and "linear_increase" in finished.stderr, finished.stderr
    assert f"run folder:  {run}" in finished.stdout
    assert f"popvae serve --runs-root {run.parent}" in finished.stdout and "http://127.0.0.1:8000/" in finished.stdout
    assert f"tensorboard --logdir {run / 'tensorboard'}" in finished.stdout, finished.stdout
    assert not any(chatter in finished.stderr + finished.stdout for chatter in RAY_CHATTER), finished.stderr


def test_a_console_writing_to_a_log_file_is_wide_enough_for_the_table(monkeypatch):
    from popvae.cluster.train_console import LOG_WIDTH, stderr_console

    monkeypatch.delenv("COLUMNS", raising=False)
    assert stderr_console().width == LOG_WIDTH  # pytest's stderr is not a terminal
    monkeypatch.setenv("COLUMNS", "100")
    assert stderr_console().width == 100
