"""Instant start: `--help`, `import popvae` and bad input that needs no data never import torch or Ray.

Checked by the modules a fresh interpreter holds afterwards, not by the clock (benchmarks/startup.py times it)."""

from __future__ import annotations

import json
import subprocess
import sys

from cli_probe import HEAVY, probe


def test_help_imports_neither_torch_nor_ray():
    argvs = [("--help",), ("train", "--help"), ("robust", "--help"), ("evaluate", "--help"), ("serve", "--help"),
             ("status", "--help")]
    for argv, (code, heavy, _) in zip(argvs, probe(*argvs), strict=True):
        assert (code, heavy) == (0, []), argv


def test_bad_input_that_needs_no_data_is_rejected_without_torch_or_ray(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"dataset": "synthetic", "members": 0}))
    cases = [
        (("train", "--config", str(config), "--run-dir", str(tmp_path / "r")), "members"),
        (("train", "--dataset", "imagenet", "--run-dir", str(tmp_path / "r")), "unknown dataset"),
        (("train", "--resume", str(tmp_path / "r"), "--members", "3"), "--members"),
        (("robust", "--methods", "gmm-dae,bad", "--run-dir", str(tmp_path / "r")), "'bad'"),
        (("robust", "--methods", "raven", "--epochs", "0", "--run-dir", str(tmp_path / "r")), "--epochs"),
        (("evaluate", str(tmp_path / "nothing")), "not found"),
        (("evaluate", str(tmp_path), "--experiments", "telepathy"), "telepathy"),
        (("train", "--exclude-classes", "a"), "expected class numbers"),
        (("train", "--config", "/dev/zero", "--run-dir", str(tmp_path / "r")), "not a regular file"),
        (("train", "--address", "127.0.0.1:6379", "--num-cpus", "2", "--run-dir", str(tmp_path / "r")), "--num-cpus"),
        (("robust", "--methods", "raven", "--seed", "-1", "--run-dir", str(tmp_path / "r")), "--seed"),
        (("status", "--watch", "-1"), "--watch"),
    ]
    for (argv, message), (code, heavy, err) in zip(cases, probe(*(argv for argv, _ in cases)), strict=True):
        assert (code, heavy) == (2, []) and message in err, (argv, err)
    assert not (tmp_path / "r").exists()


def test_import_popvae_and_its_api_names_stay_light():
    code = "import sys, popvae; popvae.RunConfig(dataset='synthetic'); popvae.train; popvae.ConfigError; " \
           f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
