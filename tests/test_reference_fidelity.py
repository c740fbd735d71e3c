"""The options that sample and train the SDE baselines as their authors' code does (tafs/train/reference.py):
``sigma_grid``, ``timestep_fraction`` (Flow-GRPO's first steps, DanceGRPO's per-sample subsets and its loss
average), ``timestep_quant``, ``window_rule: mixgrpo`` and ``kl: flow_grpo``. Each test writes the reference
rule out again (hand values or the reference loop) and fails on the behaviour before these options.

The fake backbone (conftest.LinearFakeBackbone) has v(x, sigma) = 0.5 x + sigma.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from conftest import LinearFakeBackbone
from tafs.models.backbone import Cond
from tafs.sampling.noise import sharded
from tafs.sampling.sde import DanceSDETransition, FlowSDETransition, flow_grpo_g
from tafs.train.loss import LossParts
from tafs.train.methods import Method, MethodConfig
from tafs.train.reference import model_sigma
from tafs.train.ratio import RatioProbe
from tafs.train.trainer import Trainer, TrainConfig

torch.set_num_threads(1)

B, SHAPE = 3, (1, 2, 2)


class Shift3Fake(LinearFakeBackbone):
    """The fake with SD3's shift 3 (its scheduler grid is then SD3's)."""

    default_shift = 3.0


def _x(rows: int = B, seed: int = 99) -> torch.Tensor:
    return torch.randn(rows, *SHAPE, generator=torch.Generator().manual_seed(seed))


def _sample(cfg: MethodConfig, bb=None, iteration: int = 0, rows: int = B, seed: int = 0):
    bb = bb or LinearFakeBackbone()
    traj = Method(cfg, bb.default_shift).sample(bb, bb.encode(["a"] * rows), _x(rows), torch.Generator().manual_seed(seed),
                                                iteration)
    return traj, bb


def _shift(s: float, shift: float) -> float:
    return shift * s / (1 + (shift - 1) * s)


# -- validation --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, needle", [
    ({"sampler": "annealed", "sigma_grid": "linspace"}, "method.sigma_grid"),
    ({"sampler": "flow_sde", "sigma_grid": "karras"}, "method.sigma_grid"),
    ({"sampler": "flow_sde", "shift": 3.0}, "method.shift"),  # the scheduler grid has the model's shift
    ({"sampler": "cps", "sigma_grid": "scheduler", "shift": 3.0}, "method.shift"),
    ({"sampler": "flow_sde", "n_steps": 10, "timestep_fraction": 1.0}, "method.timestep_fraction"),  # 10 > 9
    ({"sampler": "flow_sde", "n_steps": 10, "timestep_fraction": 0.05}, "method.timestep_fraction"),  # 0
    ({"sampler": "dance_sde", "n_steps": 4, "timestep_fraction": 0.3}, "method.timestep_fraction"),  # int(0.9)
    ({"sampler": "dance_sde", "timestep_fraction": 0.6, "train_fraction": 0.6}, "method.train_fraction"),
    ({"sampler": "cps", "timestep_fraction": 0.6}, "method.timestep_fraction"),
    ({"sampler": "mix_sde", "timestep_fraction": 0.6}, "method.timestep_fraction"),
    ({"sampler": "cps", "timestep_quant": 1000}, "method.timestep_quant"),
    ({"sampler": "dance_sde", "timestep_quant": -1}, "method.timestep_quant"),
    ({"sampler": "dance_sde", "timestep_quant": True}, "method.timestep_quant"),
    ({"sampler": "flow_sde", "window_rule": "mixgrpo"}, "method.window_rule"),
    ({"sampler": "mix_sde", "window_rule": "sliding"}, "method.window_rule"),
    ({"sampler": "cps", "kl": "flow_grpo"}, "method.kl"),
    ({"sampler": "annealed", "kl": "flow_grpo"}, "method.kl"),
    ({"sampler": "flow_sde", "kl": "exact"}, "method.kl"),
])
def test_new_options_are_validated_naming_the_key(kw, needle):
    with pytest.raises(ValueError, match=needle):
        MethodConfig(**kw)


def test_new_options_valid_combinations():
    MethodConfig(sampler="flow_sde", n_steps=10, timestep_fraction=0.6, kl="flow_grpo", last_step_noise=True)
    MethodConfig(sampler="flow_sde", sigma_grid="linspace", shift=3.0)
    MethodConfig(sampler="dance_sde", n_steps=25, eta=0.3, timestep_fraction=0.6, timestep_quant=1000, shift=3.0)
    MethodConfig(sampler="mix_sde", n_steps=25, window=4, window_rule="mixgrpo", timestep_quant=1000, shift=3.0)


# -- 1. sigma_grid ----------------------------------------------------------------------------------------

def _diffusers_sd3_grid(n: int, shift: float) -> list[float]:
    """FlowMatchEulerDiscreteScheduler(shift).set_timesteps(n), written out: training sigmas shifted, sigma_min =
    the last of them; timesteps linspace(1000, 1000 sigma_min, n); sigmas = shift(timesteps / 1000); then 0."""
    sigma_min = _shift(1 / 1000, shift)
    ts = [1000 + (1000 * sigma_min - 1000) * i / (n - 1) for i in range(n)]
    return [_shift(t / 1000, shift) for t in ts] + [0.0]


def test_flow_sde_samples_on_the_models_scheduler_grid():
    """Flow-GRPO samples with the pipeline's scheduler: at 10 steps, shift 3 the last non-zero sigma is 0.0089
    (shift(linspace(1, 0, 11)) would give 0.25)."""
    traj, bb = _sample(MethodConfig(sampler="flow_sde", n_steps=10, last_step_noise=True), Shift3Fake())
    ref = _diffusers_sd3_grid(10, 3.0)
    assert abs(ref[9] - 0.00893) < 5e-5
    torch.testing.assert_close(traj.sigmas.double(), torch.tensor(ref[:9]).float().double())
    torch.testing.assert_close(traj.sigmas_next.double(), torch.tensor(ref[1:10]).float().double())
    fed = [float(s[0]) for _, s in bb.calls]  # every model call, the last one (to 0) included
    assert fed == pytest.approx(ref[:10], rel=1e-6)
    assert Method(MethodConfig(sampler="cps")).sigma_grid == "scheduler"


def test_dance_and_mix_sample_on_the_shifted_linspace():
    """DanceGRPO / MixGRPO: sd3_time_shift(shift, linspace(1, 0, N + 1)) with --shift."""
    for cfg in (MethodConfig(sampler="dance_sde", n_steps=5, shift=3.0),
                MethodConfig(sampler="mix_sde", n_steps=5, window=2, shift=3.0)):
        m = Method(cfg)
        assert m.sigma_grid == "linspace"
        torch.testing.assert_close(m.sigmas(), torch.tensor([_shift(1 - i / 5, 3.0) for i in range(6)],
                                                            dtype=torch.float64))
    # the linspace grid on flow_sde, and the model's own shift when method.shift is unset
    m = Method(MethodConfig(sampler="flow_sde", n_steps=4, sigma_grid="linspace"), default_shift=3.0)
    assert m.sigmas().tolist() == pytest.approx([1.0, _shift(0.75, 3), _shift(0.5, 3), _shift(0.25, 3), 0.0])
    with pytest.raises(ValueError, match="scheduler"):
        Method(MethodConfig(sampler="flow_sde")).sigmas()


# -- 2. timestep_fraction on flow_sde ----------------------------------------------------------------------

def test_flow_grpo_trains_its_first_int_n_f_steps():
    """train_sd3.py: num_train_timesteps = int(10 * 0.6) = 6; trains range(6); every step is still SDE."""
    cfg = MethodConfig(sampler="flow_sde", n_steps=10, timestep_fraction=0.6)
    traj, _ = _sample(cfg)
    assert traj.trained.tolist() == [True] * 6 + [False] * 3
    assert (traj.log_probs != 0).all()
    assert Method(cfg).nfe_accounting() == {"nfe_old": 10, "nfe_theta": 6}
    assert sum(Method(MethodConfig(sampler="flow_sde", n_steps=10, timestep_fraction=0.99)).trained_mask(0)) == 9


# -- 3. DanceGRPO: per-sample subsets and the loss average -------------------------------------------------

def test_dance_per_sample_subsets_of_int_24_x_06():
    """25 steps: the last is dropped, 24 left, int(24 * 0.6) = 14 trained per sample (not round(14.4) shared)."""
    cfg = MethodConfig(sampler="dance_sde", n_steps=25, eta=0.3, timestep_fraction=0.6)
    traj, _ = _sample(cfg, rows=6)
    assert traj.trained.shape == (6, 24) and traj.trained.sum(1).tolist() == [14] * 6
    assert len({tuple(r) for r in traj.trained.tolist()}) > 1  # one permutation per sample
    assert Method(cfg).nfe_accounting() == {"nfe_old": 25, "nfe_theta": 14}
    assert Method(MethodConfig(sampler="dance_sde", n_steps=16, timestep_fraction=0.6)).dance_num_trained() == 9
    assert Method(MethodConfig(sampler="dance_sde", n_steps=4, timestep_fraction=0.6)).dance_num_trained() == 1


def test_dance_subsets_do_not_depend_on_the_sharding():
    cfg = MethodConfig(sampler="dance_sde", n_steps=6, eta=0.3, timestep_fraction=0.6)
    bb = LinearFakeBackbone()
    whole = Method(cfg).sample(bb, bb.encode(["a"] * 4), _x(4), torch.Generator().manual_seed(5), 0).trained
    parts = []
    for start, stop in ((0, 1), (1, 4)):
        with sharded(start, stop, 4):
            parts.append(Method(cfg).sample(bb, bb.encode(["a"] * (stop - start)), _x(4)[start:stop],
                                            torch.Generator().manual_seed(5), 0).trained)
    assert torch.equal(torch.cat(parts), whole)


def _optimise_stub(minibatches: int = 1):
    """What Trainer.optimise touches, with a fake action loss: loss = mean over the rows of c[b, j], so the
    summed backward is sum over (b, j) of c[b, j] x (the weight optimise gives that entry)."""
    grads: list[float] = []
    calls: list[tuple[int, list[int]]] = []
    c = torch.arange(1.0, 1 + 4 * 5).reshape(4, 5)

    def action_loss(traj, cond, rows, j, weights):
        calls.append((j, rows.tolist()))
        v = c[rows, j].mean()
        return LossParts(v, v, torch.zeros(()), torch.zeros(()), torch.zeros(()), torch.ones(()), torch.zeros(()))

    stub = SimpleNamespace(
        cfg=TrainConfig(inner_epochs=1, minibatches=minibatches, micro_batch=0),
        backbone=SimpleNamespace(denoiser=lambda: torch.nn.Identity()),
        accel=SimpleNamespace(device=torch.device("cpu"), backward=lambda loss: grads.append(float(loss)),
                              clip_grad_norm_=lambda params, clip: 0.0),
        shard=SimpleNamespace(world=1, sum_grads=lambda params: None),
        opt=SimpleNamespace(step=lambda: None, zero_grad=lambda set_to_none: None), params=[],
        _action_loss=action_loss, probe=RatioProbe(), _after_step=lambda: None)
    return stub, grads, calls, c


def test_optimise_masks_per_sample_and_averages_like_dance():
    """DanceGRPO (train_grpo_flux.py:571-605): per sample, per trained step, loss / (accumulation x k) with
    accumulation = the samples of one optimiser step; the summed objective is sum_b sum_{j in S_b} c / (B k)."""
    trained = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.bool)
    traj = SimpleNamespace(trained=trained)
    stub, grads, calls, c = _optimise_stub()
    Trainer.optimise(stub, traj, Cond(torch.zeros(4, 1, 1), torch.zeros(4, 1)), torch.zeros(4, 5),
                     torch.Generator().manual_seed(0), (0, 4, 4))
    reference = 0.0
    for b in range(4):  # the reference loop, written out
        k = int(trained[b].sum())
        for j in torch.nonzero(trained[b]).flatten().tolist():
            reference += float(c[b, j]) / (4 * k)
    assert sum(grads) == pytest.approx(reference)
    seen = sorted((b, j) for j, rows in calls for b in rows)
    assert seen == sorted((b, j) for b in range(4) for j in range(5) if trained[b, j])  # untrained: no call


def test_optimise_shared_mask_unchanged():
    """A (T,) mask: every sample trains the same steps, the objective is the same average."""
    traj = SimpleNamespace(trained=torch.tensor([True, False, True, True, False]))
    stub, grads, calls, c = _optimise_stub()
    out = Trainer.optimise(stub, traj, Cond(torch.zeros(4, 1, 1), torch.zeros(4, 1)), torch.zeros(4, 5),
                           torch.Generator().manual_seed(0), (0, 4, 4))
    assert sum(grads) == pytest.approx(float(c[:, [0, 2, 3]].mean()))
    assert [j for j, _ in calls] == [0, 2, 3]
    assert out["policy"] == pytest.approx(float(c[:, [0, 2, 3]].mean()))


def test_optimise_rejects_unequal_per_sample_counts():
    traj = SimpleNamespace(trained=torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0],
                                                 [1, 0, 0, 0, 0]], dtype=torch.bool))
    stub, *_ = _optimise_stub()
    with pytest.raises(ValueError, match="same number"):
        Trainer.optimise(stub, traj, Cond(torch.zeros(4, 1, 1), torch.zeros(4, 1)), torch.zeros(4, 5),
                         torch.Generator().manual_seed(0), (0, 4, 4))


# -- 4. timestep_quant --------------------------------------------------------------------------------------

def test_model_sigma_truncates_in_float32_like_the_references():
    assert model_sigma(0.6543, 1000) == 0.654 and model_sigma(0.6543, 0) == 0.6543
    assert model_sigma(1.0, 1000) == 1.0 and model_sigma(0.0005, 1000) == 0.0
    # float32 0.251 = 0.25099998, times 1000 truncates to 250 (float64 would give 251)
    assert model_sigma(0.251, 1000) == 0.25 and int(0.251 * 1000) == 251


@pytest.mark.parametrize("make, g_of", [
    (lambda q: DanceSDETransition(0.3, q), lambda s, s_next: 0.3),
    (lambda q: FlowSDETransition(0.7, q), lambda s, s_next: flow_grpo_g(0.7, s, s_next)),
])
def test_quantised_transition_feeds_the_model_q_and_uses_the_exact_sigma(make, g_of):
    """DanceGRPO flux_step: v = model(x, int(1000 s) / 1000); x0 = x - s v and the drift use the exact s."""
    bb, x, s, s_next = LinearFakeBackbone(), _x(), 0.6543, 0.4321
    mean, std, x0 = make(1000)(bb, x, s, s_next, bb.encode(["a"] * B))
    assert float(bb.calls[-1][1][0]) == pytest.approx(0.654, abs=1e-7)
    v = 0.5 * x + 0.654
    dt, g = s_next - s, g_of(s, s_next)
    torch.testing.assert_close(x0, x - s * v)
    torch.testing.assert_close(mean, x + v * dt + g * g / (2 * s) * (x + (1 - s) * v) * dt)
    torch.testing.assert_close(std, torch.full((B,), g * math.sqrt(-dt)))
    mean0, _, _ = make(0)(bb, x, s, s_next, bb.encode(["a"] * B))
    assert not torch.allclose(mean0, mean)  # unquantised: the model sees 0.6543


def test_quantised_chain_feeds_every_call_the_quantised_sigma():
    """MixGRPO feeds int(1000 sigma) / 1000 on every call: the window's SDE steps, the ODE steps and the last."""
    cfg = MethodConfig(sampler="mix_sde", n_steps=6, window=2, shift=3.0, timestep_quant=1000)
    traj, bb = _sample(cfg)
    sig = Method(cfg).sigmas().tolist()
    fed = [float(s[0]) for _, s in bb.calls]
    assert fed == pytest.approx([int(torch.tensor(s, dtype=torch.float32) * 1000) / 1000 for s in sig[:6]], abs=1e-7)
    assert fed != pytest.approx(sig[:6], abs=1e-7)
    x, s = traj.actions[:, -1], sig[5]  # the output: Euler to 0 = x - s v(x, q(s)), s exact
    torch.testing.assert_close(traj.final, x - s * (0.5 * x + fed[-1]))


# -- 5. MixGRPO's window -------------------------------------------------------------------------------------

class _ReferenceStates:
    """GRPOTrainingStates (grpo_states.py), progressive strategy, --prog_overlap --prog_overlap_step 1."""

    def __init__(self, every: int, window: int, n_steps: int, roll_back: bool):
        self.every, self.window, self.top, self.roll_back = every, window, n_steps - 2, roll_back
        self.cur = self.it = 0

    def current(self) -> list[int]:
        return list(range(self.cur, min(self.cur + self.window, self.top)))

    def update(self) -> None:
        self.it += 1
        if self.it >= self.every:
            self.it, self.cur = 0, self.cur + 1
        if self.cur > self.top:
            if self.roll_back:
                self.cur = self.it = 0
            else:
                self.cur = self.top


@pytest.mark.parametrize("roll_back", [True, False])
def test_mixgrpo_window_is_the_reference_loop(roll_back):
    cfg = MethodConfig(sampler="mix_sde", n_steps=25, window=4, window_every=25, window_rule="mixgrpo",
                       window_wrap=roll_back)
    m, ref = Method(cfg), _ReferenceStates(25, 4, 25, roll_back)
    for it in range(1300):  # train_grpo_flux.py:945-947: read the window, then update
        assert m.window_steps(it) == ref.current(), it
        ref.update()


def test_mixgrpo_window_hand_values():
    m = Method(MethodConfig(sampler="mix_sde", n_steps=25, window=4, window_rule="mixgrpo"))
    assert m.window_steps(0) == [0, 1, 2, 3] and m.window_steps(24) == [0, 1, 2, 3]
    assert m.window_steps(25 * 19) == [19, 20, 21, 22]
    assert m.window_steps(25 * 20) == [20, 21, 22] and m.window_steps(25 * 22) == [22]
    assert m.window_steps(25 * 23) == [] and m.window_steps(25 * 24) == [0, 1, 2, 3]  # roll back
    assert 23 not in {j for it in range(0, 600, 25) for j in m.window_steps(it)}  # step n - 2 never trained
    stop = Method(MethodConfig(sampler="mix_sde", n_steps=25, window=4, window_rule="mixgrpo", window_wrap=False))
    assert stop.window_steps(25 * 100) == []
    # the full rule (default) keeps 4 steps and reaches step 23
    assert Method(MethodConfig(sampler="mix_sde", n_steps=25, window=4)).window_steps(25 * 20) == [20, 21, 22, 23]


def test_mixgrpo_window_samples_and_trains_the_window():
    cfg = MethodConfig(sampler="mix_sde", n_steps=6, window=3, window_every=1, window_rule="mixgrpo")
    traj, _ = _sample(cfg, iteration=2)  # range(2, min(5, 4)) = [2, 3]
    assert traj.trained.tolist() == [False, False, True, True, False]
    assert (traj.log_probs[:, 2:4] != 0).all() and (traj.log_probs[:, [0, 1, 4]] == 0).all()
    empty, _ = _sample(cfg, iteration=4)
    assert not empty.trained.any()


# -- 6. kl: flow_grpo ---------------------------------------------------------------------------------------

def test_flow_grpo_kl_divides_by_the_noise_level_not_the_step_std():
    """train_sd3.py:895: ((mu - mu_ref)^2).mean / (2 std_dev_t^2), std_dev_t = 0.7 sqrt(s / (1 - s))."""
    bb, x, s, s_next = LinearFakeBackbone(), _x(), 0.6, 0.5
    mean, std, _ = FlowSDETransition(0.7)(bb, x, s, s_next, bb.encode(["a"] * B))
    mean_ref = mean - 0.1
    std_dev_t = 0.7 * math.sqrt(0.6 / 0.4)
    reference = torch.full((B,), 0.01 / (2 * std_dev_t ** 2))
    m = Method(MethodConfig(sampler="flow_sde", kl="flow_grpo"))
    torch.testing.assert_close(m.kl(mean, mean_ref, std, s, s_next), reference)
    gauss = Method(MethodConfig(sampler="flow_sde")).kl(mean, mean_ref, std, s, s_next)
    torch.testing.assert_close(gauss, reference / 0.1)  # / (2 g^2 (-dt)): 10x larger at dt = -0.1
    with pytest.raises(ValueError, match="sigma"):
        m.kl(mean, mean_ref, std)


def test_optimise_with_an_empty_window_takes_no_loss():
    """MixGRPO's window is empty at start n_steps - 2: nothing is trained, the stats are nan, nothing raises."""
    stub, grads, calls, _ = _optimise_stub()
    out = Trainer.optimise(stub, SimpleNamespace(trained=torch.zeros(5, dtype=torch.bool)),
                           Cond(torch.zeros(4, 1, 1), torch.zeros(4, 1)), torch.zeros(4, 5),
                           torch.Generator().manual_seed(0), (0, 4, 4))
    assert grads == [] and calls == [] and math.isnan(out["loss"]) and out["grad_norm"] == 0.0
