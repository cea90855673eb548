"""Packs (population/pack.py, population/loop_pack.py): k members under vmap, or stepped one after another, train
exactly as k ReferenceMembers would, in fp32 and in bf16."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from popvae.models.dataset_loading import synthetic
from popvae.models.gumbel import gumbel_noise
from popvae.models.registry import build
from popvae.population import training
from popvae.population.config import RunConfig
from popvae.population.loop_pack import LoopPack
from popvae.population.member import ReferenceMember
from popvae.population.pack import Pack, PackState, make_pack
from popvae.population.stacked_adam import StackedAdam

INDICES = [1, 2, 3]
TAUS = {1: 1.0, 2: 0.7, 3: 1.5}  # distinct per member: each slot must use its own
# Packed and unpacked differ only by float rounding (vmap runs the convolutions as grouped ones); Adam divides by
# sqrt(v), so a weight whose gradient is nearly zero can move by ~1e-6 more or less. Measured max |diff| ~2e-6.
STATE_TOL = {"rtol": 1e-4, "atol": 2e-5}
LOSS_TOL = {"rtol": 1e-5, "atol": 1e-4}
# Under bf16 the grouped (vmap) and plain convolutions round in bfloat16: one epoch apart, losses agree to ~2e-4
# relative (measured 1.5e-4). A weight whose gradient is near zero can take Adam steps of the other sign (each up to
# lr = 1e-3): after 8 steps a few weights differ by up to ~4e-3 (measured), so weights are compared to 1e-2.
BF16_LOSS_TOL = {"rtol": 1e-3, "atol": 1e-2}
BF16_STATE_TOL = {"rtol": 5e-2, "atol": 1e-2}


@pytest.fixture(scope="module")
def setup():
    config = RunConfig.model_validate({
        "dataset": "synthetic", "members": 3, "batch_size": 16, "steps_per_epoch": 4, "device": "cpu", "select_on": "val",
        "log_every_steps": 2, "precision": "fp32",
        "model": {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4},
    })
    return config, synthetic(256, seed=0).images, synthetic(64, seed=1).images


MODES = ["vmap", "loop"]


def _pack(setup, mode: str = "vmap", precision: str = "fp32") -> Pack:
    config, train, val = setup
    config = config.model_copy(update={"pack_mode": mode, "precision": precision})
    pack = make_pack(INDICES, config, train, val, threads=1)
    assert isinstance(pack, PackState if mode == "vmap" else LoopPack) and pack.precision == precision
    return pack


def _assert_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray], exact: bool = False,
                    tol: dict[str, float] = STATE_TOL) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert np.array_equal(a[k], b[k], equal_nan=True), k
        else:
            np.testing.assert_allclose(a[k], b[k], **tol, err_msg=k)


def _assert_losses(a: dict, b: dict, tol: dict[str, float] = LOSS_TOL) -> None:
    assert a["loss"].keys() == b["loss"].keys()
    for k in a["loss"]:
        assert a["loss"][k] == pytest.approx(b["loss"][k], rel=tol["rtol"], abs=tol["atol"]), k
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=tol["rtol"], abs=tol["atol"])
    assert a["steps"] == b["steps"]
    for k in ("curve_mse", "curve_mse_hard"):  # the learning curve, scored as reconstruction_mse scores it
        assert a[k] == pytest.approx(b[k], rel=tol["rtol"], abs=tol["atol"] / 100), k
    assert [s for s, _ in a["step_losses"]] == [s for s, _ in b["step_losses"]]  # TensorBoard's per-step loss
    assert [v for _, v in a["step_losses"]] == pytest.approx([v for _, v in b["step_losses"]], rel=tol["rtol"],
                                                              abs=tol["atol"])


@pytest.mark.parametrize("mode", MODES)
def test_packed_members_train_as_unpacked_ones_through_a_broadcast(setup, mode):
    config, train, val = setup
    members = {i: ReferenceMember(i, config, train, val, threads=1) for i in INDICES}
    pack = _pack(setup, mode)
    for i in INDICES:  # the same initial weights, member for member
        _assert_weights(pack.get_weights(i), members[i].get_weights(), exact=True)
    for epoch in range(2):
        packed = pack.train_epoch(epoch, TAUS)
        for i in INDICES:
            alone = members[i].train_epoch(epoch, TAUS[i])
            assert packed[i].keys() == alone.keys()
            assert (packed[i]["member"], packed[i]["epoch"], packed[i]["tau"]) == (i, epoch, TAUS[i])
            _assert_losses(packed[i], alone)
            _assert_weights(pack.get_weights(i), members[i].get_weights())
    assert len({packed[i]["loss"]["total"] for i in INDICES}) == 3  # three members, not one model three times
    best = min(INDICES, key=lambda i: packed[i]["val_loss"])
    best_alone, best_packed = members[best].get_weights(), pack.get_weights(best)
    for i in INDICES:
        if i != best:  # the broadcast; each member keeps its own optimizer
            members[i].set_weights(best_alone)
            pack.set_weights(i, best_packed)
    packed = pack.train_epoch(2, TAUS)
    for i in INDICES:
        _assert_losses(packed[i], members[i].train_epoch(2, TAUS[i]))
        _assert_weights(pack.get_weights(i), members[i].get_weights())
        state, alone = pack.get_optimizer_state(i), members[i].get_optimizer_state()
        assert state["param_groups"] == alone["param_groups"]
        assert float(state["state"][0]["step"]) == float(alone["state"][0]["step"]) == 12
        for p, q in zip(state["state"].values(), alone["state"].values()):
            for moment in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(p[moment], q[moment], rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize(("mode", "precision"), [("vmap", "fp32"), ("loop", "fp32"), ("vmap", "bf16"), ("loop", "bf16")])
def test_a_nan_member_stops_only_its_own_slot_and_a_reset_clears_only_its_optimizer(setup, mode, precision):
    clean, poisoned = _pack(setup, mode, precision), _pack(setup, mode, precision)
    for pack in (clean, poisoned):
        pack.train_epoch(0, TAUS)
    weights = poisoned.get_weights(2)
    first = next(iter(weights))
    weights[first].flat[0] = np.nan  # a diverged member
    poisoned.set_weights(2, weights)
    state_before = poisoned.get_optimizer_state(2)
    ok, hit = clean.train_epoch(1, TAUS), poisoned.train_epoch(1, TAUS)
    assert hit[2]["loss"].keys() == ok[2]["loss"].keys() and all(math.isnan(v) for v in hit[2]["loss"].values())
    assert math.isnan(hit[2]["val_loss"])
    _assert_weights(poisoned.get_weights(2), weights, exact=True)  # not stepped (NaN compares equal here)
    _assert_optimizer_states(poisoned.get_optimizer_state(2), state_before)
    for i in (1, 3):  # the others trained as if nothing had happened
        assert hit[i]["loss"] == ok[i]["loss"] and hit[i]["val_loss"] == ok[i]["val_loss"]
        _assert_weights(poisoned.get_weights(i), clean.get_weights(i), exact=True)
        _assert_optimizer_states(poisoned.get_optimizer_state(i), clean.get_optimizer_state(i))
    others = {i: poisoned.get_optimizer_state(i) for i in (1, 3)}
    poisoned.set_weights(2, poisoned.get_weights(1), reset_optimizer=True)  # reset from the best
    assert poisoned.get_optimizer_state(2)["state"] == {}
    for i in (1, 3):
        _assert_optimizer_states(poisoned.get_optimizer_state(i), others[i])
    after = poisoned.train_epoch(2, TAUS)
    assert all(math.isfinite(after[i]["loss"]["total"]) for i in INDICES)
    assert float(poisoned.get_optimizer_state(2)["state"][0]["step"]) == 4  # counted from its reset, alone
    assert float(poisoned.get_optimizer_state(1)["state"][0]["step"]) == 12


def _assert_optimizer_states(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for name in a["state"][i]:
            assert torch.equal(a["state"][i][name], b["state"][i][name]), (i, name)


@pytest.mark.parametrize(("mode", "precision"), [("vmap", "fp32"), ("loop", "fp32"), ("vmap", "bf16"), ("loop", "bf16")])
def test_optimizer_state_round_trips_for_resume_and_moves_to_a_member_state(setup, tmp_path, mode, precision):
    config, train, val = setup
    config = config.model_copy(update={"precision": precision})
    straight = _pack(setup, mode, precision)
    straight.train_epoch(0, TAUS)
    torch.save({i: (straight.get_weights(i), straight.get_optimizer_state(i)) for i in INDICES}, tmp_path / "ckpt.pt")
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    resumed = _pack(setup, mode, precision)
    for i in INDICES:
        resumed.set_weights(i, saved[i][0])
        resumed.set_optimizer_state(i, saved[i][1])
        _assert_optimizer_states(resumed.get_optimizer_state(i), saved[i][1])
    uninterrupted, again = straight.train_epoch(1, TAUS), resumed.train_epoch(1, TAUS)
    for i in INDICES:
        assert again[i]["loss"] == uninterrupted[i]["loss"] and again[i]["val_loss"] == uninterrupted[i]["val_loss"]
        _assert_weights(resumed.get_weights(i), straight.get_weights(i), exact=True)
    # The same checkpoint resumes unpacked: a slot's state is a torch.optim.Adam state_dict.
    member = ReferenceMember(2, config, train, val, threads=1)
    member.set_weights(saved[2][0])
    member.set_optimizer_state(saved[2][1])
    fp32 = precision == "fp32"
    _assert_losses(member.train_epoch(1, TAUS[2]), uninterrupted[2], LOSS_TOL if fp32 else BF16_LOSS_TOL)
    _assert_weights(member.get_weights(), straight.get_weights(2), tol=STATE_TOL if fp32 else BF16_STATE_TOL)
    resumed.set_optimizer_state(2, member.get_optimizer_state())  # and back
    assert float(resumed.get_optimizer_state(2)["state"][0]["step"]) == 8


def test_the_pack_gathers_on_its_device_exactly_the_batches_member_state_draws(setup, monkeypatch):
    config, train, val = setup
    drawn: list[np.ndarray] = []
    real_batches = training.batch_indices

    def recording(*args):
        for idx in real_batches(*args):
            drawn.append(idx)
            yield idx

    monkeypatch.setattr(training, "batch_indices", recording)
    for i in INDICES:
        ReferenceMember(i, config, train, val, threads=1).train_epoch(3, TAUS[i])
    monkeypatch.undo()
    steps = config.steps_per_epoch
    assert len(drawn) == steps * len(INDICES)
    pack, gathered = _pack(setup), []
    assert pack.train_images.dtype == torch.uint8 and pack.train_images.device == pack.device
    real_gather = pack.gather

    def spy(idx):
        gathered.append((idx.clone(), real_gather(idx)))
        return gathered[-1][1]

    pack.gather = spy
    pack.train_epoch(3, TAUS)
    assert len(gathered) == steps
    for step, (idx, x) in enumerate(gathered):
        for s in range(len(INDICES)):
            expected = drawn[s * steps + step]
            np.testing.assert_array_equal(idx[s].cpu().numpy(), expected)
            assert torch.equal(x[s].cpu(), torch.from_numpy(train[expected]).float() / 255.0)


def test_stacked_adam_is_k_torch_adams_with_per_slot_steps_skips_and_resets():
    torch.manual_seed(0)
    models = [torch.nn.Linear(5, 4) for _ in range(3)]
    template = torch.optim.Adam(models[0].parameters(), lr=1e-2)
    params = {k: v.detach().clone() for k, v in torch.func.stack_module_state(models)[0].items()}
    stacked = StackedAdam(params, template)
    adams = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in models]
    schedule = [[0, 1, 2], [0, 2], "reset 2", [0, 1, 2], [1], [0, 1, 2], [0, 1, 2]]
    for slots in schedule:
        if slots == "reset 2":
            stacked.reset(2)
            adams[2] = torch.optim.Adam(models[2].parameters(), lr=1e-2)
            continue
        grads = {k: torch.randn_like(v) for k, v in params.items()}
        stacked.step(params, grads, slots)
        for s in slots:
            for name, p in models[s].named_parameters():
                p.grad = grads[name][s].clone()
            adams[s].step()
    assert stacked.steps == [5, 5, 3]
    for s, model in enumerate(models):
        for name, p in model.named_parameters():
            torch.testing.assert_close(params[name][s], p.detach(), rtol=1e-6, atol=1e-7)
        ours, theirs = stacked.state_dict(s), adams[s].state_dict()
        assert ours["param_groups"] == theirs["param_groups"]
        for i, st in theirs["state"].items():
            assert float(ours["state"][i]["step"]) == float(st["step"])
            for moment in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(ours["state"][i][moment], st[moment], rtol=1e-6, atol=1e-9)


def test_gsvae_draws_the_same_noise_from_the_global_stream_as_from_a_generator_seeded_alike():
    model = build("gsvae", RunConfig.model_validate({"dataset": "synthetic", "model": {"widths": [8, 16]}}).model).train()
    x = torch.rand(4, 1, 32, 32)
    torch.manual_seed(11)
    implicit = model.loss(x, tau=0.6)
    g = torch.Generator().manual_seed(11)
    noise = [gumbel_noise((4, v, k), generator=g) for v, k in model.shapes]
    explicit = model.loss(x, noise=noise, tau=torch.tensor(0.6))
    for k in implicit:
        torch.testing.assert_close(implicit[k], explicit[k])


def test_vmap_and_loop_packs_agree_under_bf16_and_keep_the_float32_parts(setup):
    """bf16: both packs train the same members (to bf16 rounding); weights and Adam moments stay float32."""
    vmap, loop = _pack(setup, "vmap", "bf16"), _pack(setup, "loop", "bf16")
    for epoch in range(2):
        a, b = vmap.train_epoch(epoch, TAUS), loop.train_epoch(epoch, TAUS)
        for i in INDICES:
            _assert_losses(a[i], b[i], BF16_LOSS_TOL)
            _assert_weights(vmap.get_weights(i), loop.get_weights(i), tol=BF16_STATE_TOL)
    for pack in (vmap, loop):
        assert all(w.dtype == np.float32 for w in pack.get_weights(1).values())
        assert all(m.dtype == torch.float32 for st in pack.get_optimizer_state(1)["state"].values()
                   for name, m in st.items() if name != "step")
    fp32 = _pack(setup, "loop", "fp32").train_epoch(0, TAUS)
    bf16 = _pack(setup, "loop", "bf16").train_epoch(0, TAUS)
    assert fp32[1]["loss"]["total"] != bf16[1]["loss"]["total"]  # the setting reaches the step
