"""Inputs that used to eat the machine or hang, refused up front with one line (issue 22 items 2, 6, 7, 9), and the
command line's split into parsing (cluster/cli.py) and the population layer's flag table and run policies."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_probe import probe

from popvae.cluster.cli import main
from popvae.population.config import MAX_CONFIG_BYTES, ConfigError, load_config_file
from popvae.population.flags import check_resume_flags, train_config
from popvae.population.temperature import REFERENCE_DYNAMICS

# Runs one `popvae` command as a grandchild and reports its exit code, stderr, peak memory and CPU time: measured
# from a small intermediate process, because Linux counts the memory a child had when it was forked into its peak,
# and the test process (torch loaded) is large.
MEASURE = """
import json, os, subprocess, sys
proc = subprocess.Popen([sys.executable, "-m", "popvae.cluster.cli", *sys.argv[1:]], stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
err = proc.stderr.read().decode()
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "err": err.strip(), "maxrss_mib": usage.ru_maxrss / 1024,
                  "cpu_s": usage.ru_utime + usage.ru_stime}))
"""


def measured(*argv: str, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    return json.loads(done.stdout)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    return code, capsys.readouterr().err.strip()


def alias_bomb(path: Path) -> Path:
    """Nine levels of ten aliases: a billion strings once expanded, 400 bytes on disk."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path.write_text("\n".join(levels) + "\n")
    return path


@pytest.mark.parametrize("kind", ["/dev/zero", "/dev/urandom", "fifo", "folder", "alias-bomb", "50 MB"])
def test_config_bombs_are_refused_at_once_with_bounded_memory(tmp_path, kind):
    """They grew to 21.7 GB (/dev/zero), 3 GB (/dev/urandom, the alias bomb), 3.4 GB and 122 s (50 MB), or blocked
    (a FIFO). Now: exit 2, one line, under a CPU second and 200 MiB, nothing written."""
    if kind == "fifo":
        config = tmp_path / "c.yaml"
        os.mkfifo(config)
    elif kind == "folder":
        config = tmp_path / "c.json"
        config.mkdir()
    elif kind == "alias-bomb":
        config = alias_bomb(tmp_path / "c.yaml")
    elif kind == "50 MB":
        config = tmp_path / "c.yaml"
        with config.open("w") as fh:
            fh.write("members: 3\n")
            fh.write("# a comment line of padding\n" * (50 * 2**20 // 28))
    else:
        config = Path(kind)
    run_dir = tmp_path / "run"
    result = measured("train", "--dataset", "synthetic", "--config", str(config), "--run-dir", str(run_dir))
    expected = {"/dev/zero": "is a character device, not a regular file", "/dev/urandom": "is a character device",
                "fifo": "is a FIFO", "folder": "is a folder", "alias-bomb": "YAML aliases are not accepted (*a0 at line 2)",
                "50 MB": f"the limit is {MAX_CONFIG_BYTES}"}[kind]
    assert result["code"] == 2 and expected in result["err"] and len(result["err"].splitlines()) == 1, result
    assert result["cpu_s"] < 1.0 and result["maxrss_mib"] < 200, result
    assert not run_dir.exists()


def test_config_files_within_the_bounds_still_load(tmp_path):
    anchored = tmp_path / "anchor.yaml"
    anchored.write_text("members: &n 3\nepochs: 2\n")  # an anchor alone expands nothing
    assert load_config_file(anchored) == {"members": 3, "epochs": 2}
    exact = tmp_path / "exact.json"
    exact.write_text(json.dumps({"members": 3}).ljust(MAX_CONFIG_BYTES))  # trailing spaces up to the limit
    assert load_config_file(exact) == {"members": 3}
    over = tmp_path / "over.json"
    over.write_text(json.dumps({"members": 3}).ljust(MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match=f"is {MAX_CONFIG_BYTES + 1} bytes; the limit is {MAX_CONFIG_BYTES}"):
        load_config_file(over)
    nested = tmp_path / "nested.yaml"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config_file(nested)


@pytest.mark.parametrize("argv, message", [
    (("--timeout", "1e308"), "member_timeout_s: Input should be less than or equal to 2592000"),
    (("--timeout", "0"), "member_timeout_s: Input should be greater than 0"),
])
def test_durations_are_bounded_up_front(capsys, tmp_path, argv, message):
    code, err = run_cli(capsys, "train", "--dataset", "synthetic", "--run-dir", str(tmp_path / "r"), *argv)
    assert code == 2 and message in err and len(err.splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize("field", ["placement_timeout_s", "member_timeout_s"])
def test_durations_in_a_config_file_are_bounded_up_front(capsys, tmp_path, field):
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: synthetic\n{field}: 1.0e+308\n")
    code, err = run_cli(capsys, "train", "--config", str(config), "--run-dir", str(tmp_path / "r"))
    assert code == 2 and f"{field}: Input should be less than or equal to 2592000" in err and not (tmp_path / "r").exists()


def test_status_refuses_bad_input_with_exit_2(capsys):
    """It exited 1 (a SystemExit with a message) for a bad --watch, and tried to reach a --url that is no URL."""
    for flag, value in [("--watch", "-1"), ("--watch", "0"), ("--watch", "1e308"), ("--watch", "nan"),
                        ("--url", "notaurl"), ("--url", "http://127.0.0.1:99999"), ("--url", "ftp://host")]:
        code, err = run_cli(capsys, "status", flag, value)
        assert code == 2 and flag in err and len(err.splitlines()) == 1, (value, err)


@pytest.mark.parametrize("argv, message", [
    (("--workers", str(10**20)), "--workers: Input should be less than or equal to 65536"),
    (("--workers", "0"), "--workers: Input should be greater than or equal to 1"),
    (("--seed", "-1"), "--seed: Input should be greater than or equal to 0"),
    (("--seed", str(2**70)), "--seed: Input should be less than 4294967296"),
    (("--batch-size", "٣"), "expected an integer"),
    (("--num-cpus", "2", "--address", "127.0.0.1:6379"), "--num-cpus sizes a Ray started here"),
])
def test_robust_takes_the_bounds_train_takes(capsys, tmp_path, argv, message):
    argv = ("robust", "--methods", "vae-kl", "--dataset", "synthetic", "--run-dir", str(tmp_path / "r"), *argv)
    code, err = run_cli(capsys, *argv)
    assert code == 2 and message in err and len(err.splitlines()) == 1 and not (tmp_path / "r").exists()


def test_train_refuses_the_same_seeds(capsys, tmp_path):
    for seed, message in (("-1", "greater than or equal to 0"), (str(2**70), "less than 4294967296")):
        code, err = run_cli(capsys, "train", "--dataset", "synthetic", "--seed", seed, "--run-dir", str(tmp_path / "r"))
        assert code == 2 and f"seed: Input should be {message}" in err and not (tmp_path / "r").exists()


def test_evaluate_takes_the_same_bounds(capsys, tmp_path):
    for argv, message in ((("--seed", "-1"), "--seed: Input should be greater"), (("--subset", "0"), "--subset: Input"),
                          (("--subset", "١"), "expected an integer")):
        code, err = run_cli(capsys, "evaluate", str(tmp_path), *argv)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (("--address", "ray://127.0.0.1:10001"), "Ray Client (ray://) addresses are not supported"),
    (("--address", "127.0.0.1:6379", "--num-cpus", "2"), "--num-cpus sizes a Ray started here"),
    (("--address", "not an address"), "--address must be auto, local or HOST:PORT"),
    (("--address", "h:99999"), "--address port must be in 1..65535"),
])
def test_cluster_flags_that_cannot_work_are_refused_up_front(capsys, tmp_path, argv, message):
    code, err = run_cli(capsys, "train", "--dataset", "synthetic", "--run-dir", str(tmp_path / "r"), *argv)
    assert code == 2 and message in err and len(err.splitlines()) == 1 and not (tmp_path / "r").exists()


def test_a_malformed_connect_timeout_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("POPVAE_CONNECT_TIMEOUT_S", "1e308")
    code, err = run_cli(capsys, "train", "--dataset", "synthetic", "--run-dir", str(tmp_path / "r"), "--address", "h:1")
    assert code == 2 and "$POPVAE_CONNECT_TIMEOUT_S must be seconds" in err and not (tmp_path / "r").exists()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens on it once the socket is closed


def test_an_address_nobody_answers_is_given_up_within_the_bound_before_anything_is_written(pristine, tmp_path):
    """Ray itself kept retrying a closed port (still waiting after 560 s, SIGTERM ignored), leaving a folder with a lock:
    `train`, `robust` and `evaluate` (which would make its job folder) each give up, in a process of their own."""
    from tests.test_damaged_files import copy

    address = f"127.0.0.1:{closed_port()}"
    run = copy(pristine, tmp_path)
    argvs = [("train", "--dataset", "synthetic", "--members", "2", "--epochs", "1"),
             ("robust", "--dataset", "synthetic", "--methods", "vae-kl", "--epochs", "1"),
             ("evaluate", str(run), "--experiments", "purification", "--subset", "4", "--quick")]
    argvs = [(*argv, "--address", address) + (() if argv[0] == "evaluate" else ("--run-dir", str(tmp_path / argv[0])))
             for argv in argvs]
    results = probe(*argvs, env={"POPVAE_CONNECT_TIMEOUT_S": "2", "POPVAE_CACHE": str(tmp_path / "cache")})
    for argv, (code, _, err) in zip(argvs, results, strict=True):
        assert code == 1, (argv, err)
        assert err == f"popvae: error: no Ray cluster answered at {address} within 2 s (connection refused); check " \
                      "the address, or set $POPVAE_CONNECT_TIMEOUT_S to wait longer", (argv, err)
    assert not (tmp_path / "train").exists() and not (tmp_path / "robust").exists()
    assert not (run / "jobs").exists() and not (run / "report.json").exists()


def test_flags_map_onto_the_config_with_the_reference_dynamics_under_the_file(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"members": 4, "temperature": {"l_inc": 0.3, "tau0": 1.5}}))
    values = {"config": config, "reference_dynamics": True, "tau0": 1.2, "seed": 7, "no_reset_patience": True,
              "exclude_classes": [1], "no_broadcast": True, "members": None}
    data = train_config(values)
    assert data["members"] == 4 and data["seed"] == 7 and data["exclude_classes"] == [1] and data["broadcast"] is False
    temperature = data["temperature"]
    assert temperature["l_inc"] == 0.3  # the file over the reference dynamics
    assert temperature["tau0"] == 1.2  # a flag over both
    assert temperature["reset_patience"] is False
    assert all(temperature[k] == v for k, v in REFERENCE_DYNAMICS.items() if k not in ("l_inc", "tau0", "reset_patience"))
    assert train_config({"baseline": True, "members": 5}) == {"members": 1, "baseline": True}


def test_a_resume_honours_only_the_resume_flags():
    check_resume_flags({"epochs": 9, "quiet": True, "address": "auto", "baseline": False, "members": None})
    with pytest.raises(ConfigError, match="--no-broadcast cannot be used with --resume"):
        check_resume_flags({"no_broadcast": True})


def test_a_resumed_run_is_built_by_resumed_run_at_its_next_epoch(tmp_path):
    from test_cli_errors import finished_run

    from popvae.population import driver

    run = driver.resumed_run(finished_run(tmp_path / "run", epochs_done=2, epochs=2), epochs=4)
    assert run.resume and run.first_epoch == 2 and run.cfg.epochs == 4 and len(run.data.train) > 0


@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS", "--address auto with RAY_ADDRESS"])
def test_reproduce_gives_up_an_address_nobody_answers_before_writing_its_folder(capsys, tmp_path, monkeypatch, how):
    monkeypatch.setenv("POPVAE_CONNECT_TIMEOUT_S", "1")
    address = f"127.0.0.1:{closed_port()}"
    argv = ["reproduce", "--preset", "smoke", "--out", str(tmp_path / "out")]
    if how == "--address":
        argv += ["--address", address]
    else:
        monkeypatch.setenv("RAY_ADDRESS", address)
        argv += ["--address", "auto"] if "auto" in how else []
    code, err = run_cli(capsys, *argv)
    assert code == 1 and err.startswith(f"popvae: error: no Ray cluster answered at {address} within 1 s")
    assert not (tmp_path / "out").exists()
