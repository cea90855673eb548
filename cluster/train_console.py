"""The console of `popvae train`, like Ray Tune's: a table that refreshes in place, one row per member in its live
state (training, with its steps done in the epoch, idle, restarting, failed), the generation's time and an ETA that
moves within an epoch, progress while the test set is scored, and at the end the run folder and how to look at it.
A resumed run starts from the rows its folder recorded. When stderr is not a terminal (a `ray job submit` log,
nohup, CI) nothing can refresh in place, so it writes one plain, flushed line per generation instead, and the table
once at the end. Imported only once a run starts (rich, no torch or Ray)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from popvae.population.contract import dump
from popvae.population.run_folder import RunFolder


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def eta_seconds(left: int, per_epoch: float | None, fraction: float | None, in_epoch: float) -> float | None:
    """Seconds until `left` epochs (the one training now included) are done: what is left of this one (by its
    `fraction` of steps done, else by the `in_epoch` seconds it has run) plus `per_epoch` for each later one;
    None while no epoch time is known."""
    if left <= 0:
        return 0.0
    if per_epoch is None:
        return None
    current = per_epoch * (1.0 - fraction) if fraction is not None else max(per_epoch - in_epoch, 0.0)
    return current + per_epoch * (left - 1)


def epoch_progress(status: dict[str, Any] | None) -> tuple[int, int] | None:
    """(steps done, steps) of the epoch training now, from the slowest member's report; None when none reports."""
    reports = [(m["steps_done"], m["steps"]) for m in (status or {}).get("members", [])
               if m.get("state") == "training" and m.get("steps")]
    return min(reports, key=lambda r: r[0] / r[1]) if reports else None


def previous_generation(run_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the last lineage entry, status.json) a run folder holds: what a resumed run's console shows before its
    first generation; (None, None) where unreadable."""
    folder = RunFolder(run_dir)
    try:
        lineage = folder.read_lineage()
        return (dump(lineage[-1]) if lineage else None), dump(folder.read_status())
    except (OSError, ValueError):
        return None, None


ENDED = {"budget": "every epoch trained", "plateau": "plateau (no improvement)", "user": "stopped on request",
         "failed": "failed", "interrupted": "interrupted"}  # contract.StopReason as people read it

LOG_WIDTH = 160  # columns when stderr is a file or a pipe (CI logs, nohup): rich's 80 would cut the member table


def stderr_console(quiet: bool = False) -> Console:
    """The console the live table draws on: the terminal's width, else $COLUMNS, else LOG_WIDTH."""
    import os
    import sys

    wide = not sys.stderr.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=True, quiet=quiet, width=LOG_WIDTH if wide else None)


class TrainConsole:
    """Use as a context manager around one run; pass `on_generation` and `on_scoring` to `train_run`."""

    def __init__(self, console: Console, run_dir: Path, epochs: int, label: str, first_epoch: int = 0) -> None:
        self.console = console
        self.run_dir = run_dir
        self.epochs = epochs
        self.label = label
        self.first_epoch = first_epoch  # a resumed run starts here: its ETA counts only this session's generations
        self.started = time.monotonic()
        self.last_done = self.started
        self.entry: dict[str, Any] | None = None
        self.status: dict[str, Any] | None = None
        self.done = first_epoch
        self.scoring: tuple[str, int, int] | None = None
        self.ended: str | None = None
        self.reported: list[float] = []  # when each generation of this session was reported
        self.first_seen: tuple[float, float] | None = None  # (time, fraction) of this epoch's first progress report
        if first_epoch:  # a resume: the rows its last generation left, until this session's first report
            self.entry, self.status = previous_generation(run_dir)
        # a log cannot redraw in place: there, plain lines (rich's Live would show only its last frame, at the end)
        self.live = Live(self, console=console, refresh_per_second=2, transient=False, redirect_stderr=False) \
            if console.is_terminal else None

    def __enter__(self) -> TrainConsole:
        if self.live is not None:
            self.live.__enter__()
        else:
            self._say(f"{self.run_dir.name} ({self.label}): training epochs {self.done + 1}-{self.epochs}, "
                      "one line per generation")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.ended = "done" if exc[0] is None else "stopped"
        self.scoring = None
        if self.live is not None:
            self.live.__exit__(*exc)  # draws the last state once more, and leaves it on the screen
        else:
            self.console.print(self)

    # hooks for train_run
    def on_generation(self, entry: dict[str, Any], status: dict[str, Any]) -> None:
        self.entry, self.status = entry, status
        self.done = entry["epoch"]
        self.last_done = time.monotonic()
        self.reported.append(self.last_done)
        self.first_seen = None
        if self.live is not None:
            self.live.refresh()
        else:
            self._say(generation_line(entry, status, self.done, self.epochs, self._eta(self.last_done)))

    def on_progress(self, status: dict[str, Any]) -> None:
        """The coordinator's live status while an epoch trains: members' states and steps done (a log: nothing)."""
        self.status = status
        progress = epoch_progress(status)
        if progress is not None and self.first_seen is None:
            self.first_seen = (time.monotonic(), progress[0] / progress[1])
        if self.live is not None:
            self.live.refresh()

    def on_scoring(self, what: str, done: int, total: int) -> None:
        changed = self.scoring is None or self.scoring[0] != what
        self.scoring = (what, done, total)
        if self.live is not None:
            self.live.refresh()
        elif changed:
            self._say("drawing the pictures (plots/)" if what == "pictures" else f"test set: {what} ({total} images)")

    def _say(self, line: str) -> None:
        """One plain line in a log (rich flushes after every print)."""
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    # drawing
    def _per_epoch(self, now: float, fraction: float | None) -> float | None:
        """An epoch's time: the mean between this session's reports, else the last generation's (a resumed run: the
        one its folder recorded), else this epoch's rate of steps since its first progress report (Ray's start-up
        excluded)."""
        if len(self.reported) >= 2:
            return (self.reported[-1] - self.reported[0]) / (len(self.reported) - 1)
        if (self.status or {}).get("generation_seconds"):  # a resumed run's, before this session's first
            return float(self.status["generation_seconds"])
        if fraction is not None and self.first_seen is not None and fraction > self.first_seen[1]:
            return (now - self.first_seen[0]) / (fraction - self.first_seen[1])
        return None

    def _eta(self, now: float) -> str:
        if self.ended == "stopped":
            return "-"
        progress = epoch_progress(self.status) if self.ended is None and self.scoring is None else None
        fraction = progress[0] / progress[1] if progress else None
        eta = eta_seconds(self.epochs - self.done, self._per_epoch(now, fraction), fraction, now - self.last_done)
        return "-" if eta is None else _duration(eta)

    def _headline(self) -> Text:
        now = time.monotonic()
        gen = self.status.get("generation_seconds") if self.status else None
        reason = self.status.get("stop_reason") if self.status else None
        ended = f"training ended: {ENDED.get(reason, reason)}; " if reason else ""
        if self.ended is not None:
            doing = f"{ended}{self.ended}"
        elif self.scoring is not None:
            doing = f"{ended}scoring the best model on the test set"
        elif self.done < self.epochs:
            progress = epoch_progress(self.status)
            steps = f", step {progress[0]}/{progress[1]}" if progress else ""
            doing = f"training epoch {self.done + 1}/{self.epochs} ({_duration(now - self.last_done)}{steps})"
        else:
            doing = "finishing"
        last = f"last generation {gen:.1f} s  " if gen is not None else ""
        line = Text.assemble(
            (f"{self.run_dir.name}", "bold"), f" ({self.label})  epochs done {self.done}/{self.epochs}  ",
            f"{last}elapsed {_duration(now - self.started)}  ETA {self._eta(now)}{self._plateau()}  ", (doing, "cyan"),
        )
        return line

    def _plateau(self) -> str:
        """The stopper's count, once a generation is in (the status has it only for a run with `stop`)."""
        count = self.status.get("since_improvement") if self.status else None
        return f"  no improvement for {count} generation(s)" if count else ""

    def _table(self) -> Table:
        best = self.status.get("best_member") if self.status else None
        table = Table(box=None, pad_edge=False, header_style="bold")
        for name in ("member", "strategy", "tau used -> next", "loss", "val loss", "patience", "state", "node", "flags"):
            table.add_column(name, justify="right" if name in ("member", "loss", "val loss", "patience") else "left",
                             no_wrap=True, overflow="ellipsis" if name in ("flags", "strategy") else "fold")
        if self.status is None:
            table.add_row("-", "(the members report after their first epoch)", "", "", "", "", "starting", "", "")
            return table
        used = (self.entry or {}).get("tau_before", {})
        moved = set((self.entry or {}).get("feedback") or [])
        for m in self.status["members"]:
            tau_used = used.get(str(m["index"]))
            flags = [*(m.get("flags") or []), *([feedback_flag(m["strategy"])] if m["index"] in moved else [])]
            table.add_row(
                f"{'*' if m['index'] == best else ''}{m['index']}",
                m["strategy"],
                f"{_num(tau_used, 3)} -> {_num(m['tau'], 3)}",
                _num((m.get("loss") or {}).get("total")),
                _num(m.get("val_loss")),
                str(m["patience"]),
                self._member_state(m),
                (m.get("node_id") or "-")[:8],
                ",".join(flags),
                style="bold" if m["index"] == best else None,
            )
        return table

    def _member_state(self, m: dict[str, Any]) -> str:
        """Its state, with its steps done while it trains; a run that ended stops its members."""
        if m["state"] != "training":
            return m["state"]
        if self.ended is not None:
            return self.ended
        return f"training {m['steps_done']}/{m['steps']}" if m.get("steps") else "training"

    def _scoring_line(self) -> Text | None:
        if self.scoring is None:
            return None
        what, done, total = self.scoring
        if what == "pictures":
            return Text("drawing the pictures (plots/)", style="cyan")
        width = 30
        filled = int(width * done / total) if total else width
        return Text(f"test set: {what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} images", style="cyan")

    def __rich__(self) -> Group:
        parts: list[Any] = [self._headline(), self._table()]
        if self.entry is not None:
            events = self.entry.get("events") or {}
            note = f"  events {events}" if events else ""
            parts.append(Text(f"* best of epoch {self.entry['epoch']}: member {self.entry['best']} "
                              f"(selection loss {_num(self.entry.get('best_loss'))}){note}", style="dim"))
        scoring = self._scoring_line()
        if scoring is not None:
            parts.append(scoring)
        return Group(*parts)


def feedback_flag(strategy: str) -> str:
    """The flag of a member whose tau got the feedback term this generation: even the fixed member's tau moves then
    (its schedule is constant, the feedback is not), which a reader of the table would not expect."""
    return "feedback (fixed tau moved)" if strategy == "fixed" else "feedback"


def generation_line(entry: dict[str, Any], status: dict[str, Any], done: int, epochs: int, eta: str) -> str:
    """A generation in one line, for logs: the epoch, the best member with its selection loss and its tau (used this
    epoch -> next), the generation's time, the ETA, and the events."""
    best = entry["best"]
    tau_used = (entry.get("tau_before") or {}).get(str(best))
    tau_next = (entry.get("tau_after") or {}).get(str(best))
    events = entry.get("events") or {}
    return (f"epoch {done}/{epochs}  best member {best}  loss {_num(entry.get('best_loss'))}  "
            f"tau {_num(tau_used, 3)} -> {_num(tau_next, 3)}  generation {_num(status.get('generation_seconds'), 1)} s  "
            f"ETA {eta}" + (f"  feedback {entry['feedback']}" if entry.get("feedback") else "")
            + (f"  events {events}" if events else ""))


def look_hints(run_dirs: list[Path]) -> list[str]:
    """How to look at finished runs: the folder, the dashboard command and URL, the TensorBoard command (and the extra
    that installs TensorBoard, where it is missing: popvae itself only writes the event files)."""
    root = run_dirs[0].parent
    if len(run_dirs) > 1:  # the population and its baseline side by side, nothing else under the root
        tensorboard = "--logdir_spec " + ",".join(f"{d.name}:{d / 'tensorboard'}" for d in run_dirs)
    else:
        tensorboard = f"--logdir {run_dirs[0] / 'tensorboard'}"
    lines = [f"run folder:  {d}" for d in run_dirs]
    lines += [
        f"dashboard:   popvae serve --runs-root {root}   then open http://127.0.0.1:8000/",
        f"tensorboard: tensorboard {tensorboard}" + ("" if importlib.util.find_spec("tensorboard") else
                                                     "   (after: pip install 'popvae[tensorboard]')"),
        f"pictures:    {run_dirs[0] / 'plots'}/",
    ]
    return lines


def print_results(results: list[tuple[str, dict[str, Any]]]) -> None:
    """The test-set scores of each trained run (the population, and the baseline with --compare-baseline)."""
    table = Table(title="test set (MSE per pixel on [0,1] of deterministic reconstructions: relaxed codes at the best's "
                        "tau, and hard codes)")
    for col in ("run", "ended", "best member", "tau", "test MSE", "MSE hard", "test loss", "images"):
        table.add_column(col)
    for name, s in results:
        table.add_row(
            name,
            f"{ENDED.get(s.get('stop_reason'), '-')} ({s['epochs_done']} epochs)",
            str(s["best_member"]),
            f"{s['best_tau']:.3f}",
            f"{s['test_mse']:.5f}",
            "-" if s.get("test_mse_hard") is None else f"{s['test_mse_hard']:.5f}",
            f"{s['test_loss']:.2f}" + (" (noisy)" if "with Gumbel noise" in s["evaluation"] else ""),
            str(s["test_images"]),
        )
    Console().print(table)


def print_job_table(results: dict[str, dict[str, Any]]) -> None:
    """How each robust-autoencoder job of `popvae robust` ended."""
    table = Table(title="robust autoencoders (test MSE per pixel on [0,1], deterministic reconstructions)")
    for col in ("method", "state", "test MSE", "train s", "error"):
        table.add_column(col)
    for method, r in results.items():
        m = r.get("metrics") or {}
        table.add_row(
            method,
            r["state"],
            f"{m['test_mse']:.5f}" if "test_mse" in m else "",
            f"{m['train_seconds']:.0f}" if "train_seconds" in m else "",
            r.get("error") or "",
        )
    Console(width=160).print(table)
