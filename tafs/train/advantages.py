"""Step-aware advantages (DESIGN §6).

Rewards come as (N, S): N samples (prompt groups of G consecutive... any grouping given by ``groups``),
S scored steps (the one-step estimates x0_hat^2..x0_hat^{K+1} of the annealed chain, in order; the
last is the final image). Per step, rewards are normalised within each prompt group; the modes
then decide which advantage weights which action.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

MODES = ("integrated", "per_step", "to_go")
AGGREGATIONS = ("reward_aggr", "advantage_aggr")
STD_SCOPES = ("group", "global")
GROUP_BY = ("draw", "prompt")


@dataclass(frozen=True)
class AdvantageConfig:
    mode: str = "integrated"
    n_adv: int = 3  # how many of the LAST scored steps are integrated (1 = final reward only)
    rewards: dict = field(default_factory=dict)  # name -> weight (the DAG fills in the task's rewards)
    aggregation: str = "reward_aggr"
    eps: float = 1e-4
    shuffle_control: bool = False  # permute advantages within each group: the no-signal control
    std: str = "group"  # divide by the std of the prompt group, or of the whole batch ("global", Flow-GRPO's global_std)
    # "draw": the G samples of one prompt draw form a group; "prompt": all samples of the iteration with the same
    # prompt text do (Flow-GRPO's PerPromptStatTracker, keyed by the text: a prompt drawn twice is one group)
    group_by: str = "draw"
    clip: float | None = None  # clamp every action's advantage weight to [-clip, clip] (Flow-GRPO: adv_clip_max 5)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"advantage.mode must be one of {MODES}, got {self.mode!r}")
        if self.std not in STD_SCOPES:
            raise ValueError(f"advantage.std must be one of {STD_SCOPES}, got {self.std!r}")
        if self.group_by not in GROUP_BY:
            raise ValueError(f"advantage.group_by must be one of {GROUP_BY}, got {self.group_by!r}")
        if self.clip is not None and (isinstance(self.clip, bool) or not self.clip > 0):
            raise ValueError(f"advantage.clip must be > 0 or null (no clamp), got {self.clip!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"advantage.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.n_adv < 1:
            raise ValueError(f"advantage.n_adv must be >= 1, got {self.n_adv}")
        bad = {k: w for k, w in self.rewards.items() if not isinstance(w, (int, float)) or w < 0}
        if bad or (self.rewards and not any(self.rewards.values())):
            raise ValueError(f"advantage.rewards: weights must be >= 0 and not all zero, got {dict(self.rewards)}")


def prompt_groups(texts: list[str]) -> torch.Tensor:
    """Group ids (N,) by prompt text, numbered in order of first appearance: what Flow-GRPO's
    ``PerPromptStatTracker.update`` groups by (flow_grpo/stat_tracking.py:14-24, ``rewards[prompts == prompt]``)."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(t, len(ids)) for t in texts], dtype=torch.long)


def clip_weights(weights: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Clamp advantage weights to [-clip, clip] (None: unchanged). Flow-GRPO clamps the advantage that multiplies
    the ratio in the loss, ``torch.clamp(sample["advantages"][:, j], -adv_clip_max, adv_clip_max)``
    (scripts/train_sd3.py:881-885, ``train.adv_clip_max = 5`` in config/base.py:84)."""
    return weights if clip is None else weights.clamp(-clip, clip)


def group_normalize(rewards: torch.Tensor, groups: torch.Tensor, eps: float = 1e-4, std: str = "group") -> torch.Tensor:
    """(R - mean_g R) / (std R + eps) per group and per column; rewards (N, S), groups (N,) ids.

    ``std="group"``: the std of the prompt group (GRPO); ``"global"``: the std of the column over the whole batch
    (every group), as Flow-GRPO's ``global_std`` option, so groups whose samples barely differ keep small
    advantages instead of being blown up to unit scale. Both are population stds (ddof 0) with ``eps`` added to
    the std, as flow_grpo/stat_tracking.py:25-29 (``np.std(rewards, axis=0) + 1e-4`` over the gathered batch).
    """
    out = torch.empty_like(rewards, dtype=torch.float32)
    r = rewards.float()
    whole = r.std(0, unbiased=False) if r.shape[0] > 1 else torch.zeros_like(r[0])
    for g in torch.unique(groups):
        m = groups == g
        block = r[m]
        if std == "global":
            scale = whole
        else:
            scale = block.std(0, unbiased=False) if block.shape[0] > 1 else torch.zeros_like(block[0])
        out[m] = (block - block.mean(0)) / (scale + eps)
    return out


def mix_advantages(rewards: dict[str, torch.Tensor], weights: dict[str, float], groups: torch.Tensor,
                   aggregation: str, eps: float = 1e-4, std: str = "group") -> torch.Tensor:
    """Per-step advantages (N, S) of a weighted reward mix.

    ``reward_aggr``: normalise the weighted sum of rewards; ``advantage_aggr``: normalise each reward,
    then take the weighted sum of the advantages. ``std``: see :func:`group_normalize`.
    """
    missing = sorted(set(weights) - set(rewards))
    if missing:
        raise KeyError(f"rewards {missing} were asked for but not computed")
    if aggregation == "reward_aggr":
        total = sum(w * rewards[k].float() for k, w in weights.items())
        return group_normalize(total, groups, eps, std)
    return sum(w * group_normalize(rewards[k], groups, eps, std) for k, w in weights.items())


def action_weights(adv: torch.Tensor, action_step: torch.Tensor, mode: str, n_adv: int, first: int = 0
                   ) -> torch.Tensor:
    """Advantage weight of every action: (N, T).

    ``adv`` is (N, S') over the scored steps ``first .. first + S' - 1`` in order (the trainer scores only the last
    N_adv: tafs.train.scoring; ``first`` = 0 when every step is scored); ``action_step[j]`` (T,) is the step index
    of the estimate that action j produces, or -1 if it produces none that is scored. Only the last ``n_adv``
    steps count: a step before ``first`` has advantage 0.
    """
    n, s = adv.shape
    k = min(n_adv, s)
    keep = torch.zeros(s, dtype=torch.bool, device=adv.device)
    keep[s - k:] = True
    a = adv * keep
    t = action_step.shape[0]
    if mode == "integrated":
        return a.sum(1, keepdim=True).expand(n, t).clone()
    out = torch.zeros(n, t, dtype=adv.dtype, device=adv.device)
    for j, step in enumerate(action_step.tolist()):
        if step < 0:
            continue
        col = step - first  # negative: the action's own estimate comes before the scored ones (advantage 0)
        if mode == "per_step":
            if col >= 0:
                out[:, j] = a[:, col]
        else:  # to_go: the action's own step and every later one
            out[:, j] = a[:, max(col, 0):].sum(1)
    return out


def shuffle_within_groups(weights: torch.Tensor, groups: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The control: the same advantages, randomly reassigned to samples of the same group."""
    out = weights.clone()
    for g in torch.unique(groups):
        idx = torch.nonzero(groups == g).flatten()
        perm = idx[torch.randperm(len(idx), generator=generator)]
        out[idx] = weights[perm]
    return out
