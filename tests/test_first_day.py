"""What a new user meets first (issue 21, item 9): --version, a description for users, every default in --help, every
robust method listed, a missing torchvision dataset said with where popvae looked and how to get the files."""

from __future__ import annotations

import re

import pytest

from popvae.cluster.cli import main
from popvae.population.methods import METHODS


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # argparse wraps, also at hyphens: one line


def test_version_and_a_description_for_users(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and re.fullmatch(r"popvae \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)
    text = _help(capsys)
    assert "Population training of Gumbel-Softmax VAEs" in text and "imports" not in text  # not the module's notes


@pytest.mark.parametrize("argv, shown", [
    (("train",), ["--tau0 TAU0 initial tau (default 1)", "--tau-min TAU_MIN lower clip of tau (default 0.1)",
                  "--tau-max TAU_MAX upper clip of tau (default 2)", "auto | cpu | cuda (default auto)",
                  "before it is dropped (default 1800)", "(one pack per GPU or CPU node) | K (default auto)",
                  "--patience PATIENCE feedback patience threshold (default 2)"]),
    (("serve",), ["(default runs)", "(default 127.0.0.1)", "port to listen on (default 8000)"]),
    (("status",), ["(default http://127.0.0.1:8000)"]),
    (("robust",), ["epochs per job, default 5 (a preset sets its own)",
                   "images per step, default 128 (a preset sets its own)", ", ".join(METHODS)]),
    (("evaluate",), ["unseen (default: all)", "fits the purification CNN once", "~/.cache/popvae"]),
])
def test_help_shows_the_defaults(capsys, argv, shown):
    text = _help(capsys, *argv)
    for words in shown:
        assert words in text, (words, text)
    assert "default None" not in text


def test_a_missing_torchvision_dataset_says_where_it_looked_and_how_to_get_it(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--dataset", "mnist", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"mnist not found or unreadable under {tmp_path / 'data'} (the default --data-root `data`, relative to the " \
           "current folder): no such folder; popvae never downloads" in err, err
    assert "torchvision.datasets.MNIST(ROOT, download=True)" in err and "--data-root FOLDER" in err
    assert not (tmp_path / "r").exists()


def test_local_cluster_stop_removes_rays_session_files_and_says_what_it_keeps(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "cluster" / "local_cluster.sh"
    state = tmp_path / "lc"
    for folder in ("ray/session_1/logs", "runs/pop1", "logs", "pids"):
        (state / folder).mkdir(parents=True)
    (state / "ray" / "session_1" / "logs" / "raylet.out").write_bytes(b"x" * 300_000)
    (state / "runs" / "pop1" / "best.pt").write_bytes(b"w" * 100_000)
    (state / "auth_token").write_text("t")
    env = {**os.environ, "POPVAE_CLUSTER_DIR": str(state)}
    env.pop("POPVAE_KEEP_RAY_SESSION", None)
    done = subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert not (state / "ray").exists() and (state / "runs" / "pop1" / "best.pt").is_file() and (state / "auth_token").is_file()
    assert "removed Ray's session files (" in done.stdout and "kept the runs (" in done.stdout, done.stdout
    assert f"in {state / 'runs'}, checkpoints included)" in done.stdout and f"rm -rf {state} frees them" in done.stdout


def test_every_train_flag_has_a_default_or_none_even_inside_an_optional_section():
    from popvae.population.flags import TRAIN_FLAGS, flag_default

    defaults = {flag: flag_default(path) for flag, (path, _, _) in TRAIN_FLAGS.items()}
    assert defaults["--tau0"] == 1.0 and defaults["--device"] == "auto" and defaults["--data-root"] is None
    assert all(flag_default((*path, "deeper")) is None for path, _, _ in TRAIN_FLAGS.values())  # never raises


def test_the_tensorboard_hint_names_the_extra_only_where_tensorboard_is_missing(tmp_path, monkeypatch):
    import importlib.util

    from popvae.cluster.train_console import look_hints

    installed = importlib.util.find_spec

    def line() -> str:
        return next(h for h in look_hints([tmp_path / "run"]) if h.startswith("tensorboard:"))

    assert installed("tensorboard") is not None and "pip install" not in line()  # make install puts it in .venv
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else installed(name, *a))
    assert line().endswith("(after: pip install 'popvae[tensorboard]')")
