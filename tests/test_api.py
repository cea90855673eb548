"""The Python API: the README's example runs as written, and the API refuses what the command refuses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import popvae

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_trains_stops_resumes_loads_and_refuses_a_used_folder(tmp_path):
    done = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, capture_output=True, text=True,
                          timeout=240)  # inside the suite's 300 s per test
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "epoch 1: best member" in out and "stopped after 1 of 2 epochs" in out
    assert "3 epochs, best member" in out and "GSVAE member" in out
    assert "refused: run folder runs/notebook already holds a run; continue it with popvae.resume('runs/notebook')" in out
    assert "takes [1, 32, 32]" in out and "reconstruct (4, 1, 32, 32) encode (4, 24) decode (4, 1, 32, 32)" in out, out
    run = tmp_path / "runs" / "notebook"
    assert json.loads((run / "status.json").read_text())["state"] == "done"
    assert json.loads((run / "config.json").read_text())["epochs"] == 3  # the resume's extension is the run's budget now
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs_done"] == 3 and "test_loss: deterministic" in summary["evaluation"]


def test_a_used_folder_or_a_bad_config_is_a_config_error_before_anything_starts(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "config.json").write_text("{}")
    with pytest.raises(popvae.ConfigError, match="already holds a run"):
        popvae.train(popvae.RunConfig(dataset="synthetic"), used)
    with pytest.raises(popvae.ConfigError, match="members"):
        popvae.train({"dataset": "synthetic", "members": 0}, tmp_path / "new")
    with pytest.raises(popvae.ConfigError, match="cannot resume"):
        popvae.resume(tmp_path / "new")
    assert not (tmp_path / "new").exists() and sorted(p.name for p in used.iterdir()) == ["config.json"]
    with pytest.raises(FileNotFoundError):
        popvae.load_best(tmp_path / "new")
    with pytest.raises(popvae.ConfigError, match="telepathy"):
        popvae.evaluate(used, experiments=["telepathy"])


def test_prepare_turns_the_raw_files_into_exactly_what_training_saw():
    """A 28x28 Fashion-MNIST image through `prepare` is the 32x32 image the model trained on (issue 21, item 5): the
    model of `load_best` fails on the raw files without it."""
    import numpy as np
    import torch

    from popvae.models.configs import GSVAEConfig
    from popvae.models.dataset_loading import FASHION_MNIST_ROOT, _fashion_mnist, load_split, to_float
    from popvae.models.gsvae import GSVAE

    raw = _fashion_mnist(FASHION_MNIST_ROOT, "test").images[:16]  # (16, 1, 28, 28) uint8, as in the IDX file
    meta = {"input_shape": [1, 32, 32]}
    x = popvae.prepare(raw[:, 0], meta)  # (N, H, W) as numpy reads the file
    assert torch.equal(x, to_float(load_split("fashion-mnist", "test").images[:16]))
    assert torch.equal(popvae.prepare(raw.transpose(0, 2, 3, 1), meta), x)  # channels last
    assert torch.allclose(popvae.prepare(raw[:, 0] / 255.0, meta), x, atol=0.02)  # floats in [0,1]
    model = GSVAE(GSVAEConfig()).eval()
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        model.reconstruct(to_float(raw))
    with torch.no_grad():
        assert model.reconstruct(x).shape == (16, 1, 32, 32) and model.decode(model.encode(x)).shape == (16, 1, 32, 32)
    with pytest.raises(ValueError, match="1 channel"):
        popvae.prepare(np.zeros((2, 3, 28, 28), np.uint8), meta)


def test_a_config_error_raised_to_python_names_the_api_not_the_flags(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "config.json").write_text("{}")
    with pytest.raises(popvae.ConfigError) as err:
        popvae.train(popvae.RunConfig(dataset="synthetic"), used)
    assert f"popvae.resume({str(used)!r})" in str(err.value) and "--" not in str(err.value)
