"""Mixed precision and the pack mode: what `auto` resolves to, what a run records, and that a bf16 run does the same
science as an fp32 one (real Ray, real runs)."""

from __future__ import annotations

import math

import pytest
import torch

from popvae.models.registry import build
from popvae.population import folder_io
from popvae.population.config import ConfigError, parse_config
from popvae.population.driver import load_run_data, resolve_speed, run_population
from popvae.population.folder_io import read_json
from popvae.population.pack import pack_mode_for
from popvae.population.plans import plan_robust
from popvae.population.robust import train_job
from popvae.population.training import autocast, cpu_model, cpu_runs_bf16_fast, resolve_precision
from tests.robust_data import fashion

SMALL_MODEL = {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}
# A bf16 run and an fp32 run from the same seed, same budget: their test MSEs agree within this relative tolerance.
# Measured on this machine (the two runs below): 0.09402 fp32, 0.09398 bf16, 0.05 % apart; 5 % leaves room for bf16
# rounding to pick another best member on another machine.
SCIENCE_RTOL = 0.05

SAPPHIRE = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n"
OLDER = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n"


def test_the_cpu_flags_are_read_and_auto_precision_keeps_an_explicit_choice():
    assert cpu_runs_bf16_fast(SAPPHIRE) and not cpu_runs_bf16_fast(OLDER)
    assert cpu_runs_bf16_fast("flags : avx512_bf16\n") and not cpu_runs_bf16_fast("model name : amx_bf16 lookalike\n")
    assert cpu_model("model name\t: Intel Xeon\n" + SAPPHIRE) == "Intel Xeon (AMX or AVX512-BF16)"
    assert cpu_model("model name\t: AMD EPYC\n" + OLDER) == "AMD EPYC (no fast bf16)"
    assert cpu_model("") == "unknown (no fast bf16)"
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_runs_bf16_fast() else "fp32")  # this machine's flags
    assert pack_mode_for("auto", cpu) == "loop" and pack_mode_for("auto", torch.device("cuda")) == "vmap"
    assert pack_mode_for("loop", cpu) == "loop"


def test_a_new_run_records_what_auto_resolved_to_and_a_resume_keeps_what_the_run_trained_with():
    cfg = parse_config({"dataset": "synthetic"})
    assert (cfg.precision, cfg.pack_mode) == ("auto", "auto")
    new = resolve_speed(cfg, gpus=0)
    assert new.precision == resolve_precision("auto", torch.device("cpu")) and new.pack_mode == "loop"
    on_gpus = resolve_speed(cfg, gpus=1)
    assert on_gpus.pack_mode == "vmap" and on_gpus.precision in ("bf16", "fp32")
    old = resolve_speed(cfg, gpus=0, recorded=cfg)  # a config.json written before the options existed
    assert (old.precision, old.pack_mode) == ("fp32", "vmap")
    recorded = parse_config({"dataset": "synthetic", "precision": "bf16", "pack_mode": "loop"})
    assert resolve_speed(recorded, gpus=0, recorded=recorded) == recorded
    assert resolve_speed(cfg, gpus=1, recorded=recorded) == recorded  # auto asked again: what the run trained with
    fp32 = cfg.model_copy(update={"precision": "fp32"})
    assert (resolve_speed(fp32, gpus=0, recorded=recorded).precision, resolve_speed(fp32, gpus=0, recorded=recorded)
            .pack_mode) == ("fp32", "loop")  # an explicit choice is kept


def test_bf16_keeps_logits_pixels_and_the_loss_in_float32_while_the_convolutions_run_in_bf16():
    model = build("gsvae", parse_config({"dataset": "synthetic", "model": SMALL_MODEL}).model)
    x = torch.rand(4, 1, 32, 32)
    seen: list[torch.dtype] = []
    model.encoder[0].register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    with torch.no_grad(), autocast("bf16", torch.device("cpu")):
        logits = model.logits(x)
        recon = model.reconstruct(x)
        parts = model.loss(x)
    assert seen[0] == torch.bfloat16  # the convolution ran in bf16
    assert all(lg.dtype == torch.float32 for lg in logits) and recon.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in parts.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def _run(ray_session, tmp_path, name: str, precision: str):
    cfg = parse_config({"dataset": "synthetic", "synthetic_size": 512, "members": 2, "epochs": 3, "batch_size": 32,
                        "steps_per_epoch": 12, "model": SMALL_MODEL, "seed": 5, "precision": precision})
    return run_population(cfg, tmp_path / name, load_run_data(cfg))


def test_a_bf16_run_reaches_the_test_mse_of_an_fp32_run_from_the_same_seed(ray_session, tmp_path):
    fp32, bf16 = _run(ray_session, tmp_path, "fp32", "fp32"), _run(ray_session, tmp_path, "bf16", "bf16")
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")  # the summary says which
    assert folder_io.read_json(tmp_path / "bf16" / "config.json")["precision"] == "bf16"
    assert folder_io.read_json(tmp_path / "bf16" / "config.json")["pack_mode"] == "loop"  # auto, on a CPU
    start = 0.25  # a loose bound: both runs must have learnt something, not merely agree
    assert bf16["test_mse"] < start and fp32["test_mse"] < start
    assert bf16["test_mse"] == pytest.approx(fp32["test_mse"], rel=SCIENCE_RTOL)
    rows = folder_io.read_rows(tmp_path / "bf16" / "history.parquet")
    assert all(math.isfinite(r["score"]) for r in rows)


@pytest.mark.parametrize("method", ["gmm-dae", "robust-gmm-dae", "vae-kl"])
def test_a_robust_job_trains_in_bf16_records_it_and_stays_near_its_fp32_twin(tmp_path, method):
    test = fashion("test", 40)
    fp32 = train_job(method, fashion("train", 256), test, tmp_path / "fp32", epochs=2, batch_size=32, steps_per_epoch=3,
                     seed=1, device="cpu", precision="fp32")
    bf16 = train_job(method, fashion("train", 256), test, tmp_path / "bf16", epochs=2, batch_size=32, steps_per_epoch=3,
                     seed=1, device="cpu", precision="bf16")
    assert read_json(tmp_path / "bf16" / "config.json")["precision"] == "bf16"
    assert read_json(tmp_path / "fp32" / "config.json")["precision"] == "fp32"
    assert fp32["total"] != bf16["total"]  # the setting reaches the job's step
    assert bf16["test_mse"] == pytest.approx(fp32["test_mse"], rel=SCIENCE_RTOL)


def test_robust_plans_carry_the_precision_and_refuse_an_unknown_one(tmp_path):
    plan = plan_robust("gmm-dae", tmp_path / "r", precision="bf16")
    assert plan["config"]["precision"] == "bf16" and plan["jobs"][0]["precision"] == "bf16"
    with pytest.raises(ConfigError, match="--precision must be one of auto, fp32, bf16, got 'fp16'"):
        plan_robust("gmm-dae", tmp_path / "r", precision="fp16")
