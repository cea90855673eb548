"""TensorBoard event files per member and progress.csv: what `tensorboard --logdir runs/` and a spreadsheet read.
Read back with tensorboardX's own protobufs (the TFRecord framing is 8 bytes length, 4 crc, data, 4 crc)."""

from __future__ import annotations

import csv
import math
import struct
from pathlib import Path

from tensorboardX.proto import event_pb2

from popvae.population.contract import HistoryRow
from popvae.population.tensorboard_logs import RunLogs


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


def row(epoch: int, member: int, loss: float, best: bool) -> HistoryRow:
    return HistoryRow(epoch=epoch, member=member, strategy="fixed", tau=1.0 + epoch, tau_next=1.5 + epoch, loss_total=loss,
                      loss_reconstruction=loss - 1, loss_kl_z1=0.5, loss_kl_z2=0.5, val_loss=loss + 2, score=loss + 2,
                      patience=epoch, is_best=best, seconds=0.1)


def test_events_per_member_and_progress_csv(tmp_path: Path) -> None:
    logs, history = RunLogs(tmp_path), []
    for epoch in range(3):
        rows = [row(epoch, 1, 100.0 - epoch, True), row(epoch, 2, math.nan if epoch == 1 else 110.0, False)]
        history += rows
        logs.generation(rows, history, {1: [(epoch * 20 + 10, 101.0 - epoch), (epoch * 20 + 20, 100.5 - epoch)],
                                        2: [(epoch * 20 + 10, math.nan)]})
    logs.close()
    one = read_scalars(tmp_path / "tensorboard" / "member-1")
    assert one["loss/train_total"] == {1: 100.0, 2: 99.0, 3: 98.0}  # steps are 1-based epochs, as the console
    assert one["tau/used"] == {1: 1.0, 2: 2.0, 3: 3.0} and one["tau/next"][3] == 3.5 and one["best"] == {1: 1, 2: 1, 3: 1}
    parts = {"loss/train_reconstruction", "loss/train_kl_z1", "loss/train_kl_z2", "loss/val", "loss/selection", "patience"}
    assert parts <= set(one)
    assert "loss/train_step" not in one  # its steps are optimizer steps: a file of its own
    steps = read_scalars(tmp_path / "tensorboard" / "member-1" / "train_step")
    assert steps == {"loss/train_step": {10: 101.0, 20: 100.5, 30: 100.0, 40: 99.5, 50: 99.0, 60: 98.5}}
    two = read_scalars(tmp_path / "tensorboard" / "member-2")
    assert two["loss/train_total"] == {1: 110.0, 3: 110.0}  # a diverged epoch is left out, not logged as NaN
    assert not (tmp_path / "tensorboard" / "member-2" / "train_step").exists()  # only NaN steps: nothing logged
    with open(tmp_path / "progress.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and rows[0]["epoch"] == "0" and rows[0]["member"] == "1" and float(rows[5]["score"]) == 112.0
    assert set(HistoryRow.model_fields) == set(rows[0])
