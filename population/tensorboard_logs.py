"""Logs the ecosystem reads, next to the run's own files: TensorBoard event files per member and progress.csv.

    RUN_DIR/tensorboard/member-<i>/events.out.tfevents.*   scalars per epoch (1-based step, as people count):
        loss/train_total, loss/train_reconstruction, loss/train_kl_z1, loss/train_kl_z2, loss/val, loss/selection,
        tau/used, tau/next, patience, best (1 when it won the epoch), curve/mse and curve/mse_hard (the learning
        curve: reconstruction MSE on the run's validation subset, relaxed and hard codes)
    RUN_DIR/tensorboard/member-<i>/train_step/events.out.tfevents.*   loss/train_step, the training loss every
        `log_every_steps` optimizer steps, its step the member's optimizer steps so far (a file of its own: one file
        whose steps mean epochs for some tags and optimizer steps for others reads to TensorBoard as out of order)
    RUN_DIR/progress.csv   every history row (0-based epoch, as history.parquet), rewritten each generation

`tensorboard --logdir runs/` then compares members (and runs: each run is its own folder). Written by tensorboardX
from the Recorder after each generation; a failure to write them never stops a run.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

from popvae.models.atomic import atomic_write
from popvae.population.contract import HistoryRow

_SCALARS = {
    "loss/train_total": "loss_total", "loss/train_reconstruction": "loss_reconstruction", "loss/train_kl_z1": "loss_kl_z1",
    "loss/train_kl_z2": "loss_kl_z2", "loss/val": "val_loss", "loss/selection": "score", "tau/used": "tau",
    "tau/next": "tau_next", "patience": "patience", "curve/mse": "curve_mse", "curve/mse_hard": "curve_mse_hard",
}


class RunLogs:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._writers: dict[int, Any] = {}

    def _writer(self, member: int, sub: str = "") -> Any:
        key = f"member-{member}/{sub}".rstrip("/")
        if key not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[key] = SummaryWriter(str(self.run_dir / "tensorboard" / key), flush_secs=3600)
        return self._writers[key]

    def generation(self, rows: list[HistoryRow], history: list[HistoryRow],
                   step_losses: dict[int, list[tuple[int, float]]] | None = None) -> None:
        """Log one generation's `rows` (and each member's per-step `step_losses`) to TensorBoard and rewrite
        progress.csv from the whole `history`."""
        try:
            for row in rows:
                writer, step = self._writer(row.member), row.epoch + 1
                steps = [(int(t), float(v)) for t, v in (step_losses or {}).get(row.member, []) if math.isfinite(v)]
                if steps:
                    per_step = self._writer(row.member, "train_step")
                    for optimizer_step, value in steps:
                        per_step.add_scalar("loss/train_step", value, optimizer_step)
                    per_step.flush()
                for tag, column in _SCALARS.items():
                    value = getattr(row, column)
                    if value is not None and math.isfinite(value):
                        writer.add_scalar(tag, float(value), step)
                writer.add_scalar("best", float(row.is_best), step)
                writer.flush()
            self._write_csv(history)
        except Exception as e:  # logs for other tools must never stop a run
            warnings.warn(f"TensorBoard/CSV logs not written: {e}", stacklevel=2)

    def _write_csv(self, history: list[HistoryRow]) -> None:
        buf = io.StringIO()
        out = csv.DictWriter(buf, fieldnames=list(HistoryRow.model_fields))
        out.writeheader()
        for row in history:
            out.writerow(row.model_dump())
        data = buf.getvalue().encode()
        atomic_write(self.run_dir / "progress.csv", lambda fh: fh.write(data))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
