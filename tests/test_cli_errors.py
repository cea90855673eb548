"""Bad input: exit code 2, one line on stderr, and nothing written."""

from __future__ import annotations

import gzip
import json

import pytest

from popvae.cluster.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


BASE = ("train", "--dataset", "synthetic", "--epochs", "1")


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--members", "0"), "members"),
        (("--epochs", "0"), "epochs"),
        (("--tau-min", "2", "--tau-max", "1"), "tau_min"),
        (("--select-on", "best"), "select_on"),
        (("--scale", "other"), "scale"),
        (("--batch-size", "-1"), "batch_size"),
        (("--stop-plateau", "0"), "stop.plateau_generations"),
        (("--stop-plateau", "2", "--stop-min-delta", "1.5"), "stop.min_delta"),
        (("--stop-min-delta", "0.01"), "--stop-min-delta needs --stop-plateau"),
    ],
)
def test_invalid_settings_are_rejected_before_anything_is_written(capsys, tmp_path, extra, message):
    run_dir = tmp_path / "run"
    code, err = run_cli(capsys, *BASE, "--run-dir", str(run_dir), *extra)
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not run_dir.exists()


def test_unknown_dataset(capsys, tmp_path):
    code, err = run_cli(capsys, "train", "--dataset", "imagenet", "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "unknown dataset 'imagenet'" in err and not (tmp_path / "r").exists()


def test_missing_dataset_files(capsys, tmp_path):
    code, err = run_cli(
        capsys, "train", "--dataset", "fashion-mnist", "--data-root", str(tmp_path / "empty"), "--run-dir", str(tmp_path / "r")
    )
    assert code == 2 and "not found" in err and "dataset-fashion-mnist" in err
    assert not (tmp_path / "r").exists()


def test_corrupt_dataset_file(capsys, tmp_path):
    root = tmp_path / "fm"
    root.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (root / f"{name}.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x05" * 3 + b"short"))
    code, err = run_cli(capsys, "train", "--dataset", "fashion-mnist", "--data-root", str(root), "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "corrupt" in err and not (tmp_path / "r").exists()
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    code, err = run_cli(capsys, "train", "--dataset", "fashion-mnist", "--data-root", str(root), "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "corrupt" in err and not (tmp_path / "r").exists()


def test_bad_config_files(capsys, tmp_path):
    bad_json = tmp_path / "c.json"
    bad_json.write_text("{members: 3")
    code, err = run_cli(capsys, "train", "--config", str(bad_json), "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "not valid JSON" in err
    unknown = tmp_path / "u.json"
    unknown.write_text(json.dumps({"dataset": "synthetic", "memberz": 3}))
    code, err = run_cli(capsys, "train", "--config", str(unknown), "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "memberz" in err
    code, err = run_cli(capsys, "train", "--config", str(tmp_path / "missing.yaml"), "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "cannot read" in err
    assert not (tmp_path / "r").exists()


def test_existing_run_folder_and_resume_without_checkpoint(capsys, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "config.json").write_text("{}")
    code, err = run_cli(capsys, *BASE, "--run-dir", str(used))
    assert code == 2 and "already holds a run" in err
    code, err = run_cli(capsys, "train", "--resume", str(tmp_path / "nothing"))
    assert code == 2 and "cannot resume" in err and not (tmp_path / "nothing").exists()
    code, err = run_cli(capsys, "train")
    assert code == 2 and "--run-dir" in err


def test_exclude_classes_out_of_range(capsys, tmp_path):
    code, err = run_cli(capsys, *BASE, "--exclude-classes", "12", "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "exclude_classes" in err and not (tmp_path / "r").exists()


def test_robust_rejects_unknown_methods_and_bad_budgets(capsys, tmp_path):
    code, err = run_cli(
        capsys, "robust", "--methods", "gmm-dae,frobnicate", "--dataset", "synthetic", "--run-dir", str(tmp_path / "r")
    )
    assert code == 2 and "frobnicate" in err and not (tmp_path / "r").exists()
    code, err = run_cli(
        capsys, "robust", "--methods", "raven", "--epochs", "0", "--dataset", "synthetic", "--run-dir", str(tmp_path / "r")
    )
    assert code == 2 and "--epochs" in err and not (tmp_path / "r").exists()
    code, err = run_cli(capsys, "robust", "--methods", "raven", "--dataset", "nope", "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "unknown dataset" in err and not (tmp_path / "r").exists()


def test_evaluate_rejects_missing_targets_and_unknown_experiments(capsys, tmp_path):
    code, err = run_cli(capsys, "evaluate", str(tmp_path / "nothing"))
    assert code == 2 and "not found" in err
    code, err = run_cli(capsys, "evaluate", str(tmp_path), "--experiments", "purification,telepathy")
    assert code == 2 and "telepathy" in err


@pytest.mark.parametrize(
    "config, message",
    [
        ({"model": {"widths": []}}, "widths must be one or more"),
        ({"model": {"widths": [8] * 7}}, "too small for 7 stride-2 layers"),
        ({"model": {"lr": float("inf")}}, "finite number"),
        ({"temperature": {"scale": "reference", "r_inc": 0.5}}, "go the wrong way"),
    ],
)
def test_configs_that_could_never_train_are_rejected(capsys, tmp_path, config, message):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))  # json writes inf as Infinity, which the config reader accepts as JSON
    code, err = run_cli(capsys, *BASE, "--config", str(path), "--run-dir", str(tmp_path / "r"))
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_too_few_images_for_a_batch_is_a_data_error_before_anything_is_written(capsys, tmp_path):
    code, err = run_cli(capsys, *BASE, "--exclude-classes", "0,1,2,3,4,5,6,7,8,9", "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "train split has 0 images without classes" in err
    code, err = run_cli(capsys, *BASE, "--batch-size", "100000", "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "needs at least batch_size = 100000" in err and not (tmp_path / "r").exists()


def test_run_dir_under_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    code, err = run_cli(capsys, *BASE, "--run-dir", str(tmp_path / "f" / "run"))
    assert code == 2 and f"{tmp_path / 'f'} is a file" in err
    code, err = run_cli(capsys, "robust", "--methods", "vae-kl", "--dataset", "synthetic", "--run-dir", str(tmp_path / "f"))
    assert code == 2 and "is a file" in err


def test_resume_of_a_damaged_run_names_the_damaged_file(capsys, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text("{not json")
    (run / "checkpoints" / "latest.pt").write_bytes(b"garbage")
    code, err = run_cli(capsys, "train", "--resume", str(run))
    assert code == 2 and "config.json is unreadable" in err
    (run / "config.json").write_text(json.dumps({"dataset": "synthetic"}))
    code, err = run_cli(capsys, "train", "--resume", str(run))
    assert code == 2 and "checkpoints/latest.pt is unreadable: damaged" in err and len(err.splitlines()) == 1


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--exclude-classes", "a,b"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "expected class numbers" in err
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--port", "99999"])
    assert exit_.value.code == 2 and "1..65535" in capsys.readouterr().err


def test_serve_refuses_a_busy_port_and_an_open_bind_without_token(capsys, tmp_path, monkeypatch):
    import socket

    monkeypatch.delenv("POPVAE_API_TOKEN", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        code, err = run_cli(capsys, "serve", "--runs-root", str(tmp_path), "--port", str(busy.getsockname()[1]))
    assert code == 2 and "cannot listen on 127.0.0.1" in err
    code, err = run_cli(capsys, "serve", "--runs-root", str(tmp_path), "--host", "0.0.0.0")
    assert code == 2 and "without a bearer token" in err


def test_torchvision_dataset_with_bad_magic_is_a_dataset_error(capsys, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x09" + bytes(16))  # torchvision asserts on this magic
    code, err = run_cli(capsys, "train", "--dataset", "mnist", "--data-root", str(tmp_path), "--run-dir", str(tmp_path / "r"))
    assert code == 2 and "mnist not found or unreadable" in err and "AssertionError" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("model, field", [({"in_channels": 3}, "in_channels"), ({"image_size": 64}, "image_size")])
def test_a_model_shape_that_contradicts_the_dataset_is_an_error(capsys, tmp_path, model, field):
    """It used to be replaced silently by the dataset's shape."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": model}))
    code, err = run_cli(capsys, *BASE, "--config", str(config), "--run-dir", str(tmp_path / "r"))
    assert code == 2 and f"model.{field}" in err and "synthetic" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def finished_run(folder, epochs_done=2, epochs=2):
    """A run folder as a finished run leaves it, as far as a resume reads it: config.json, checkpoints/latest.pt, and
    summary.json once every epoch is trained and scored."""
    import torch

    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"dataset": "synthetic", "epochs": epochs}))
    (folder / "status.json").write_text(json.dumps({"state": "done", "epoch": epochs_done, "epochs": epochs}))
    state = {"epochs_done": epochs_done, "taus": {}, "patience": {}, "flags": {}, "weights": {}, "optimizers": {}}
    torch.save(state, folder / "checkpoints" / "latest.pt")
    if epochs_done >= epochs:
        (folder / "summary.json").write_text("{}")
    return folder


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_with_nothing_left_to_train_says_so_and_changes_nothing(capsys, tmp_path):
    run = finished_run(tmp_path / "run")
    before = snapshot(run)
    code, err = run_cli(capsys, "train", "--resume", str(run))
    assert code == 2 and len(err.splitlines()) == 1
    assert "nothing left to train" in err and "already did 2 of 2 epochs" in err and "--epochs 3" in err
    code, err = run_cli(capsys, "train", "--resume", str(run), "--epochs", "2")
    assert code == 2 and "already did 2 of 2 epochs" in err
    assert snapshot(run) == before


def test_resume_may_only_extend_the_epochs(capsys, tmp_path):
    run = finished_run(tmp_path / "run", epochs_done=3, epochs=5)
    before = snapshot(run)
    code, err = run_cli(capsys, "train", "--resume", str(run), "--epochs", "2")
    assert code == 2 and "already did 3" in err and "only extend" in err
    for extra, flag in [(("--members", "3"), "--members"), (("--seed", "1"), "--seed"), (("--baseline",), "--baseline"),
                        (("--compare-baseline",), "--compare-baseline"), (("--config", "c.json"), "--config"),
                        (("--exclude-classes", "1"), "--exclude-classes"), (("--tau0", "2"), "--tau0")]:
        code, err = run_cli(capsys, "train", "--resume", str(run), "--epochs", "6", *extra)
        assert code == 2 and err.startswith(f"popvae: error: {flag} cannot be used with --resume"), (flag, err)
    assert snapshot(run) == before


def test_compare_baseline_refuses_a_used_baseline_folder_before_training(capsys, tmp_path):
    used = tmp_path / "run-baseline"
    used.mkdir()
    (used / "config.json").write_text("{}")
    code, err = run_cli(capsys, *BASE, "--run-dir", str(tmp_path / "run"), "--compare-baseline")
    assert code == 2 and f"{used} already holds a run" in err and not (tmp_path / "run").exists()
    code, err = run_cli(capsys, *BASE, "--run-dir", str(tmp_path / "other"), "--compare-baseline", "--baseline")
    assert code == 2 and "--compare-baseline" in err and not (tmp_path / "other").exists()
