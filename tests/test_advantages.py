"""Step-aware advantages (DESIGN §6): group normalisation, reward mixes, integration modes, the control."""

from __future__ import annotations

import pytest
import torch

from tafs.config import ConfigError, from_dict
from tafs.train.advantages import (AdvantageConfig, action_weights, group_normalize, mix_advantages,
                                   shuffle_within_groups)

torch.set_num_threads(1)

EPS = 1e-4


def _ref_group_normalize(rewards: torch.Tensor, groups: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Independent float64 reference: loop over samples, population std, + eps in the denominator."""
    r = rewards.double()
    out = torch.zeros_like(r)
    for i in range(r.shape[0]):
        same = [k for k in range(r.shape[0]) if int(groups[k]) == int(groups[i])]
        block = r[same]
        mean = block.sum(0) / len(same)
        std = (((block - mean) ** 2).sum(0) / len(same)).sqrt()
        out[i] = (r[i] - mean) / (std + eps)
    return out


def _interleaved_groups(n_groups: int = 3, size: int = 8) -> torch.Tensor:
    """Group ids that are NOT contiguous (0,1,2,0,1,2,...): grouping must follow the ids, not the order."""
    return torch.arange(n_groups).repeat(size)


# -- group_normalize -------------------------------------------------------------------------------

@pytest.mark.parametrize("contiguous", [True, False])
def test_group_normalize_zero_mean_unit_std(contiguous):
    g = torch.Generator().manual_seed(0)
    groups = torch.arange(3).repeat_interleave(8) if contiguous else _interleaved_groups()
    # different scales and offsets per group and per step column
    rewards = torch.randn(24, 4, generator=g) * torch.tensor([0.5, 2.0, 10.0, 1.0])  # std >> eps + 3.0
    rewards = rewards + groups[:, None].float() * 5.0
    adv = group_normalize(rewards, groups, EPS)
    assert adv.shape == (24, 4)
    assert adv.dtype == torch.float32
    for gid in range(3):
        block = adv[groups == gid].double()
        assert block.shape == (8, 4)
        torch.testing.assert_close(block.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-5, rtol=0)
        # population std (unbiased=False), within 1e-3 given eps = 1e-4
        torch.testing.assert_close(block.std(0, unbiased=False), torch.ones(4, dtype=torch.float64),
                                   atol=1e-3, rtol=0)
    torch.testing.assert_close(adv.double(), _ref_group_normalize(rewards, groups), atol=1e-5, rtol=1e-5)


def test_group_normalize_population_std_by_hand():
    # group [0, 2]: mean 1, population std 1 (sample std would be sqrt 2)
    adv = group_normalize(torch.tensor([[0.0], [2.0]]), torch.tensor([0, 0]), EPS)
    torch.testing.assert_close(adv, torch.tensor([[-1.0], [1.0]]) / (1 + EPS))


def test_group_normalize_constant_group_gives_zeros():
    g = torch.Generator().manual_seed(1)
    groups = torch.arange(3).repeat_interleave(8)
    rewards = torch.randn(24, 3, generator=g)
    rewards[8:16] = 0.7  # group 1 constant in every column
    rewards[0:8, 2] = -2.0  # group 0 constant in one column only
    adv = group_normalize(rewards, groups, EPS)
    assert torch.equal(adv[8:16], torch.zeros(8, 3))
    assert torch.equal(adv[0:8, 2], torch.zeros(8))
    assert adv[0:8, :2].abs().sum() > 1  # the other columns are normalised
    assert adv[16:].abs().sum() > 1


def test_group_normalize_singleton_group_is_zero():
    adv = group_normalize(torch.tensor([[1.0], [3.0], [5.0]]), torch.tensor([0, 0, 1]), EPS)
    assert torch.isfinite(adv).all()
    assert adv[2, 0] == 0
    torch.testing.assert_close(adv[:2, 0], torch.tensor([-1.0, 1.0]) / (1 + EPS))


# -- reward mixes ----------------------------------------------------------------------------------

def test_mix_advantages_by_hand():
    groups = torch.tensor([0, 0, 1, 1])
    r1 = torch.tensor([[0.0], [2.0], [1.0], [1.0]])
    r2 = torch.tensor([[2.0], [0.0], [0.0], [4.0]])
    rewards, weights = {"a": r1, "b": r2}, {"a": 1.0, "b": 0.5}

    # reward_aggr: total = [1, 2, 1, 3]; group 0 mean 1.5 std 0.5, group 1 mean 2 std 1
    expected_reward = torch.tensor([[-0.5 / (0.5 + EPS)], [0.5 / (0.5 + EPS)], [-1 / (1 + EPS)], [1 / (1 + EPS)]])
    out = mix_advantages(rewards, weights, groups, "reward_aggr", EPS)
    torch.testing.assert_close(out, expected_reward)
    torch.testing.assert_close(out, group_normalize(r1 + 0.5 * r2, groups, EPS))

    # advantage_aggr: A(a) = [-1, 1]/(1+eps), [0, 0];  A(b) = [1, -1]/(1+eps), [-2, 2]/(2+eps)
    expected_adv = torch.tensor([[-0.5 / (1 + EPS)], [0.5 / (1 + EPS)], [-1 / (2 + EPS)], [1 / (2 + EPS)]])
    out = mix_advantages(rewards, weights, groups, "advantage_aggr", EPS)
    torch.testing.assert_close(out, expected_adv)
    torch.testing.assert_close(out, group_normalize(r1, groups, EPS) + 0.5 * group_normalize(r2, groups, EPS))


def test_mix_advantages_random_two_rewards():
    g = torch.Generator().manual_seed(2)
    groups = _interleaved_groups()
    r1, r2 = torch.rand(24, 3, generator=g), 10 * torch.rand(24, 3, generator=g)
    w = {"x": 0.25, "y": 2.0}
    torch.testing.assert_close(mix_advantages({"x": r1, "y": r2}, w, groups, "reward_aggr", EPS),
                               _ref_group_normalize(0.25 * r1 + 2.0 * r2, groups).float(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mix_advantages({"x": r1, "y": r2}, w, groups, "advantage_aggr", EPS),
                               (0.25 * _ref_group_normalize(r1, groups) + 2.0 * _ref_group_normalize(r2, groups)).float(),
                               atol=1e-5, rtol=1e-5)


def test_mix_advantages_missing_reward():
    with pytest.raises(KeyError, match="nope"):
        mix_advantages({"a": torch.zeros(2, 1)}, {"a": 1.0, "nope": 1.0}, torch.tensor([0, 0]), "reward_aggr")


# -- integration modes -----------------------------------------------------------------------------

ADV = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # (N=2, S=3)
STEP = torch.tensor([0, 1, 2, -1])  # 4 actions; the last produces no scored estimate


@pytest.mark.parametrize("mode, n_adv, expected", [
    # integrated: the row sum over the last n_adv steps, for every action (including the unscored one)
    ("integrated", 1, [[3, 3, 3, 3], [6, 6, 6, 6]]),
    ("integrated", 2, [[5, 5, 5, 5], [11, 11, 11, 11]]),
    ("integrated", 3, [[6, 6, 6, 6], [15, 15, 15, 15]]),
    # per_step: action j gets A[action_step[j]], 0 outside the last n_adv and for unscored actions
    ("per_step", 1, [[0, 0, 3, 0], [0, 0, 6, 0]]),
    ("per_step", 2, [[0, 2, 3, 0], [0, 5, 6, 0]]),
    ("per_step", 3, [[1, 2, 3, 0], [4, 5, 6, 0]]),
    # to_go: sum of A[m] for m >= action_step[j], m within the last n_adv
    ("to_go", 1, [[3, 3, 3, 0], [6, 6, 6, 0]]),
    ("to_go", 2, [[5, 5, 3, 0], [11, 11, 6, 0]]),
    ("to_go", 3, [[6, 5, 3, 0], [15, 11, 6, 0]]),
])
def test_action_weights_by_hand(mode, n_adv, expected):
    out = action_weights(ADV, STEP, mode, n_adv)
    assert out.shape == (2, 4)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float32))


def test_action_weights_permuted_action_steps():
    # the pairing follows action_step, not the action's position
    out = action_weights(ADV, torch.tensor([2, 0, 1]), "per_step", 3)
    torch.testing.assert_close(out, torch.tensor([[3.0, 1.0, 2.0], [6.0, 4.0, 5.0]]))
    out = action_weights(ADV, torch.tensor([2, 0, 1]), "to_go", 2)
    torch.testing.assert_close(out, torch.tensor([[3.0, 5.0, 5.0], [6.0, 11.0, 11.0]]))


def test_action_weights_n_adv_larger_than_steps_is_all_steps():
    for mode in ("integrated", "per_step", "to_go"):
        torch.testing.assert_close(action_weights(ADV, STEP, mode, 10), action_weights(ADV, STEP, mode, 3))


def test_integrated_n_adv_1_is_final_reward_grpo():
    g = torch.Generator().manual_seed(3)
    groups = torch.arange(3).repeat_interleave(8)
    rewards = torch.rand(24, 3, generator=g)
    adv = group_normalize(rewards, groups, EPS)
    w = action_weights(adv, torch.arange(3), "integrated", 1)
    final_only = group_normalize(rewards[:, -1:], groups, EPS)[:, 0]
    for j in range(3):
        torch.testing.assert_close(w[:, j], final_only)


def test_integrated_n_adv_s_is_row_sum():
    g = torch.Generator().manual_seed(4)
    adv = torch.randn(6, 5, generator=g)
    w = action_weights(adv, torch.arange(5), "integrated", 5)
    torch.testing.assert_close(w, adv.sum(1, keepdim=True).expand(6, 5))
    # and does not alias its input
    w[0, 0] = 123.0
    assert w[0, 1] != 123.0


def test_to_go_is_reverse_cumsum_and_per_step_is_identity():
    g = torch.Generator().manual_seed(5)
    adv = torch.randn(4, 3, generator=g)
    steps = torch.arange(3)
    torch.testing.assert_close(action_weights(adv, steps, "per_step", 3), adv)
    torch.testing.assert_close(action_weights(adv, steps, "to_go", 3), adv.flip(1).cumsum(1).flip(1))


# -- the shuffle control ---------------------------------------------------------------------------

def test_shuffle_within_groups_keeps_group_multisets():
    groups = _interleaved_groups()
    # unique values, tagged with their group so a cross-group move would be visible
    base = torch.arange(24, dtype=torch.float32)
    weights = torch.stack([base, base + 0.5], 1) + 1000 * groups[:, None].float()
    out = shuffle_within_groups(weights, groups, torch.Generator().manual_seed(0))
    assert out.shape == weights.shape
    moved = False
    for gid in range(3):
        m = groups == gid
        before, after = weights[m], out[m]
        # the same multiset of rows (rows move together: a sample keeps its whole weight row)
        assert sorted(map(tuple, before.tolist())) == sorted(map(tuple, after.tolist()))
        assert ((after // 1000) == gid).all()  # nothing came from another group
        moved |= not torch.equal(before, after)
    assert moved  # it actually shuffles
    # input untouched
    assert torch.equal(weights[:, 0], base + 1000 * groups.float())


def test_shuffle_within_groups_deterministic_per_generator():
    groups = torch.arange(3).repeat_interleave(8)
    w = torch.randn(24, 3, generator=torch.Generator().manual_seed(6))
    a = shuffle_within_groups(w, groups, torch.Generator().manual_seed(1))
    b = shuffle_within_groups(w, groups, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


# -- config ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, needle", [
    ({"mode": "bad"}, "mode"),
    ({"mode": "integrate"}, "mode"),
    ({"n_adv": 0}, "n_adv"),
    ({"n_adv": -2}, "n_adv"),
    ({"aggregation": "mean"}, "aggregation"),
    ({"rewards": {"toy_dense": -1.0}}, "rewards"),
    ({"rewards": {"toy_dense": 0.0, "clip": 0.0}}, "not all zero"),
])
def test_advantage_config_rejects(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        AdvantageConfig(**kwargs)


def test_advantage_config_accepts_every_mode_and_aggregation():
    for mode in ("integrated", "per_step", "to_go"):
        for agg in ("reward_aggr", "advantage_aggr"):
            cfg = AdvantageConfig(mode=mode, aggregation=agg, n_adv=1)
            assert (cfg.mode, cfg.aggregation, cfg.n_adv) == (mode, agg, 1)


def test_advantage_config_from_dict_names_bad_key():
    from tafs.train.trainer import TrainConfig

    with pytest.raises(ConfigError, match=r"train\.advantage.*nadv"):
        from_dict(TrainConfig, {"advantage": {"nadv": 2}}, "train")
    with pytest.raises(ValueError, match="mode"):
        from_dict(TrainConfig, {"advantage": {"mode": "bogus"}}, "train")


def test_global_std_by_hand():
    """Flow-GRPO's global std: group means are removed, the scale is the whole batch's std.
    rewards 1, 3 | 10, 10: batch mean 6, deviations -5 -3 4 4, variance 66 / 4 = 16.5, std 4.0620;
    group 0 mean 2 -> -1 / 4.0620 = -0.24618, +0.24618; group 1 constant -> 0 (its group std would be 0)."""
    r = torch.tensor([[1.0], [3.0], [10.0], [10.0]])
    groups = torch.tensor([0, 0, 1, 1])
    out = group_normalize(r, groups, 0.0, "global")
    torch.testing.assert_close(out.flatten(), torch.tensor([-0.246183, 0.246183, 0.0, 0.0]), atol=1e-5, rtol=0)
    per_group = group_normalize(r, groups, 1e-4, "group")
    torch.testing.assert_close(per_group.flatten()[:2], torch.tensor([-1 / 1.0001, 1 / 1.0001]))
    mixed = mix_advantages({"x": r}, {"x": 2.0}, groups, "reward_aggr", 0.0, "global")
    torch.testing.assert_close(mixed, out)  # a positive weight scales mean and std alike
    with pytest.raises(ValueError, match="advantage.std"):
        AdvantageConfig(std="batch")


@pytest.mark.parametrize("mode", ["integrated", "per_step", "to_go"])
@pytest.mark.parametrize("n_adv", [1, 2])
def test_scoring_only_the_last_n_adv_steps_gives_the_same_weights(mode, n_adv):
    """The trainer decodes and scores only the last n_adv estimates (tafs.train.scoring): the weights from those
    columns alone (``first`` = the first scored step) equal those from every column."""
    from tafs.train.scoring import first_scored

    g = torch.Generator().manual_seed(0)
    adv = torch.randn(6, 3, generator=g)
    steps = torch.tensor([0, 1, 2])  # K = 3 actions, each producing scored step j (x0_hats has 4 estimates)
    full = action_weights(adv, steps, mode, n_adv)
    first = first_scored(4, n_adv)
    assert first == 3 - n_adv
    assert torch.equal(action_weights(adv[:, first:], steps, mode, n_adv, first), full)
