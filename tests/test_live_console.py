"""The live console of `popvae train` (issue 21, item 7) during a real run: members show the state they are in
(training, with their steps done in the epoch), the ETA moves within an epoch, no `last generation -s` before the
first generation, and a resumed run starts from the rows its folder recorded."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from popvae.cluster.train_console import TrainConsole, epoch_progress, eta_seconds
from popvae.population import driver as runs
from popvae.population.config import parse_config
from popvae.population.driver import new_run, resumed_run, train_run

SMALL_MODEL = {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}


def config(**over):
    base = {"dataset": "synthetic", "synthetic_size": 256, "members": 2, "epochs": 2, "batch_size": 16,
            "steps_per_epoch": 4, "model": SMALL_MODEL, "seed": 3, "pack_size": 4}  # one worker process
    return parse_config({**base, **over})


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def screen(live: TrainConsole) -> str:
    out = Console(file=io.StringIO(), width=200, record=True)
    out.print(live)
    return out.export_text()


def test_the_eta_moves_within_an_epoch_with_its_steps_done() -> None:
    assert eta_seconds(3, 10.0, 0.0, 0.0) == 30.0
    assert eta_seconds(3, 10.0, 0.5, 5.0) == 25.0 and eta_seconds(3, 10.0, 0.9, 9.0) == 21.0
    assert eta_seconds(2, 10.0, None, 4.0) == 16.0  # no steps reported: by the time the epoch has run
    assert eta_seconds(2, None, 0.5, 4.0) is None and eta_seconds(0, 10.0, None, 0.0) == 0.0
    status = {"members": [{"state": "training", "steps_done": 30, "steps": 60}, {"state": "training", "steps_done": 12,
                                                                                  "steps": 60}, {"state": "idle"}]}
    assert epoch_progress(status) == (12, 60) and epoch_progress({"members": [{"state": "idle"}]}) is None


def test_before_the_first_generation_no_empty_generation_time_is_shown(tmp_path: Path) -> None:
    with TrainConsole(quiet(), tmp_path / "run", 3, "2 members") as live:
        text = screen(live)
    assert "training epoch 1/3" in text and "ETA -" in text
    assert "last generation" not in text and "-s" not in text, text


def test_members_show_they_train_and_how_far_while_an_epoch_runs(ray_session, tmp_path: Path, monkeypatch) -> None:
    """A real run: while each epoch trains, the console's rows read `training k/n` and its headline the step."""
    monkeypatch.setattr(runs, "PROGRESS_POLL_S", 0.05)  # the driver asks often: a fast epoch is still seen mid-way
    frames: list[str] = []
    run = new_run(config(steps_per_epoch=40), tmp_path / "run")
    with TrainConsole(quiet(), run.run_dir, run.cfg.epochs, "2 members") as live:
        def progress(status: dict) -> None:
            live.on_progress(status)
            frames.append(screen(live))

        train_run(run, on_generation=live.on_generation, on_progress=progress)
    assert frames, "no live status while the epochs trained"
    training = [f for f in frames if re.search(r"training \d+/40", f)]
    assert training, frames[-1]
    steps = [int(s) for f in training for s in re.findall(r"step (\d+)/40", f)]
    assert steps and all(1 <= s <= 40 for s in steps), training[-1]
    assert not any(re.search(r"\bidle\b", f) for f in training), training[-1]  # not idle while they train
    assert any("training epoch 2/2" in f and "last generation" in f for f in frames), frames[-1]


def test_a_resumed_run_shows_the_rows_its_folder_recorded(ray_session, tmp_path: Path, monkeypatch) -> None:
    """Before its first report, from the folder; then live, with the last generation's losses and time kept."""
    monkeypatch.setattr(runs, "PROGRESS_POLL_S", 0.05)
    run = new_run(config(steps_per_epoch=40), tmp_path / "run")
    train_run(run, on_generation=lambda entry, status: True)  # stopped after its first epoch
    resumed = resumed_run(run.run_dir, 3)
    with TrainConsole(quiet(), resumed.run_dir, resumed.cfg.epochs, "2 members", resumed.first_epoch) as live:
        text = screen(live)
    assert "report after their first epoch" not in text, text
    assert re.search(r"1\s+fixed\s+\d\.\d{3} -> \d\.\d{3}", text) and "linear_increase" in text, text
    assert "best of epoch 1: member" in text and "epochs done 1/3" in text and "training epoch 2/3" in text, text
    statuses: list[dict] = []
    train_run(resumed, on_generation=lambda entry, status: True, on_progress=statuses.append)
    assert statuses, "no live status while the resumed epoch trained"
    first = statuses[0]
    assert first["generation_seconds"] is not None and all(m["loss"] and m["val_loss"] for m in first["members"]), first


def test_popvae_status_shows_steps_and_no_empty_generation_time() -> None:
    """`popvae status` reads the same live answer: a member training shows its steps; no `generation -s`."""
    from fake_runs import status

    from popvae.cluster.status_table import _table

    pop = {**status("r", 0, 3, 2), "generation_seconds": None, "source": "live", "note": None}
    pop["members"][0].update(steps_done=7, steps=40)
    out = Console(file=io.StringIO(), width=200, record=True)
    out.print(_table(pop))
    text = out.export_text()
    assert "training 7/40" in text and "generation" not in text and "-s" not in text, text
