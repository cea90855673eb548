"""Property: whatever values reach the train flags, `popvae train` exits 0 or 2, never with a traceback, one line on
stderr, and writes nothing when it exits 2. No Ray: the data root never exists, so a valid draw stops at the dataset
check (exit 2) and `ensure_ray` is replaced by a trap that fails the test if it is ever reached."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from popvae.cluster import cli
from popvae.population import driver

INTS = st.one_of(st.integers(-5, 70), st.integers(-(2**80), 2**80), st.sampled_from([0, 1, 2**32, 2**32 - 1, 10**20]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1e-300, 1e308, 1e6, 2.0]))
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["٣", "１２", "nan", "inf", "-inf", "1e308", "0x10", " 3", "", "--"]))
VALUES = {int: INTS.map(str) | TEXT, float: FLOATS.map(repr) | INTS.map(str) | TEXT}
CHOICES = {"--dataset": ["fashion-mnist", "mnist", "cifar10", "imagenet", ""],  # never synthetic: it needs no data
           "--select-on": ["train", "val", "best"], "--device": ["auto", "cpu", "cuda", "tpu"],
           "--scale": ["paper", "reference", "x"]}
JSON_VALUES = st.one_of(st.booleans(), st.none(), INTS, st.floats(allow_nan=False), st.text(max_size=6),
                        st.lists(st.integers(0, 300), max_size=4))
CONFIG_KEYS = ["members", "epochs", "batch_size", "seed", "synthetic_size", "val_size", "steps_per_epoch",
               "exclude_classes", "member_timeout_s", "checkpoint_every", "select_on", "baseline"]


@st.composite
def train_argv(draw: st.DrawFn) -> tuple[list[str], dict | None]:
    argv = ["train", "--data-root", "/nonexistent/popvae-fuzz", "--quiet"]
    for flag, (_, typ, _) in cli.TRAIN_FLAGS.items():
        if flag == "--data-root" or not draw(st.booleans()):
            continue
        value = draw(st.sampled_from(CHOICES[flag])) if flag in CHOICES else draw(VALUES.get(typ, TEXT))
        argv += [f"{flag}={value}"]
    if "--dataset" not in " ".join(argv):
        argv += ["--dataset", "fashion-mnist"]
    if draw(st.booleans()):
        argv += [f"--num-cpus={draw(INTS)}"]
    if draw(st.booleans()):
        argv += [f"--address={draw(st.sampled_from(['auto', 'localhost:6379', 'not-an-address', 'ray://h:1', 'h:99999', ':']))}"]
    for flag in ("--baseline", "--no-reset-patience", "--compare-baseline"):
        if draw(st.booleans()):
            argv.append(flag)
    if draw(st.booleans()):
        argv += [f"--exclude-classes={draw(st.text(alphabet=string.digits + ',-x', max_size=8))}"]
    config = None
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(CONFIG_KEYS), max_size=4, unique=True))
        config = {k: draw(JSON_VALUES) for k in keys}
    return argv, config


@pytest.fixture
def no_ray(monkeypatch):
    def trap(*_a, **_k):
        raise AssertionError("Ray was about to start for input that should have been rejected or stopped earlier")

    monkeypatch.setattr(driver, "ensure_ray", trap)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=train_argv(), name=st.sampled_from(["run", "r" * 300, "ok-name", "ünï"]))
def test_any_train_flags_exit_0_or_2_without_traceback(case, name, tmp_path_factory, capsys, no_ray):
    argv, config = case
    root = tmp_path_factory.mktemp("fuzz")
    if config is not None:
        (root / "c.json").write_text(json.dumps(config))
        argv += ["--config", str(root / "c.json")]
    argv += ["--run-dir", str(root / name)]
    before = sorted(p.name for p in root.iterdir())
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), (argv, config, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, (argv, config, err)
    if code == 2:
        assert sorted(p.name for p in root.iterdir()) == before, (argv, config, err)
