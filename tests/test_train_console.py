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


def test_a_log_gets_one_flushed_line_per_generation_while_the_run_goes_on(tmp_path):
    """stderr a pipe, as in `ray job submit` logs or nohup (issue 21, item 1): each generation is a plain line the
    moment it is done, not one frame at the end; a SIGTERM then leaves those lines and the resume command."""
    run = tmp_path / "runs" / "logged"
    env = {k: v for k, v in _env().items() if k != "COLUMNS"}
    proc = subprocess.Popen([POPVAE, "train", "--run-dir", str(run), "--epochs", "400", "--dataset", "synthetic",
                             "--members", "2", "--steps-per-epoch", "1", "--num-cpus", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:  # read while it runs: a line that was not flushed would not arrive before the end
        while not any(line.startswith("epoch 2/400") for line in lines):
            assert proc.poll() is None and _epoch(run) < 4, "".join(lines)  # two more generations done, no line yet
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=5)
    log = "".join(lines)
    assert proc.returncode == 143, log
    generations = [ln for ln in lines if ln.startswith("epoch ")]
    assert re.match(r"epoch 1/400  best member [12]  loss \d+\.\d\d  tau \d\.\d{3} -> \d\.\d{3}  generation \d+\.\d s  "
                    r"ETA \d+:\d\d", generations[0]), log
    assert generations[1].startswith("epoch 2/400"), log
    assert not ANSI.search(log) and f"continue with: popvae train --resume {run}" in log, log


def test_a_feedback_move_is_flagged_and_the_fixed_members_is_named():
    from popvae.cluster.train_console import feedback_flag, generation_line

    assert feedback_flag("fixed") == "feedback (fixed tau moved)" and feedback_flag("exp_increase") == "feedback"
    entry = {"epoch": 4, "best": 2, "best_loss": 101.5, "tau_before": {"2": 1.1}, "tau_after": {"2": 1.2}, "feedback": [1]}
    line = generation_line(entry, {"generation_seconds": 3.04}, 5, 9, "0:12")
    assert line == "epoch 5/9  best member 2  loss 101.50  tau 1.100 -> 1.200  generation 3.0 s  ETA 0:12  feedback [1]"


def test_the_console_says_why_training_ended_and_shows_the_hard_code_mse(monkeypatch, capsys, tmp_path):
    import io

    from rich.console import Console

    from popvae.cluster.train_console import TrainConsole, print_results

    live = TrainConsole(Console(file=io.StringIO(), width=200), tmp_path / "run", 10, "2 members")
    live.status = {"stop_reason": None, "since_improvement": 2, "generation_seconds": 1.0, "members": []}
    live.done = 4
    assert "no improvement for 2 generation(s)" in live._headline().plain
    live.status = {**live.status, "stop_reason": "plateau", "since_improvement": 3}
    live.scoring = ("test MSE", 10, 100)
    assert "training ended: plateau (no improvement); scoring" in live._headline().plain
    monkeypatch.setenv("COLUMNS", "200")
    summary = {"best_member": 2, "best_tau": 1.5, "test_mse": 0.0201, "test_mse_hard": 0.0457, "test_loss": 250.0,
               "test_images": 100, "evaluation": "deterministic", "stop_reason": "plateau", "epochs_done": 4}
    print_results([("population", summary), ("old", {**summary, "test_mse_hard": None, "stop_reason": None})])
    out = capsys.readouterr().out
    assert "MSE hard" in out and "0.04570" in out and "plateau (no improvement) (4 epochs)" in out, out
