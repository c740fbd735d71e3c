"""The policy ratio before the first update of an iteration (config ``train.old_logprob``, metric
``ratio_max_abs_log``).

Before the first optimiser step of an iteration the policy IS the sampling policy, so the ratio should be 1.
It is only 1 up to the arithmetic: the sampler ran ``sample_chunk`` samples per pass in eval mode, the
training pass runs ``micro_batch`` chunks of a permutation in train mode, and in bf16/fp16 a different batch
shape picks other kernels and roundings, so logp_new - logp_old is not 0 (the ratio drift Flow-GRPO and
DanceGRPO users report at the first update in bf16). With a PPO clip of 1e-4..1e-3 that noise alone can clip.

``recompute`` re-evaluates the old log-probs with the training pass's own layout (the first inner epoch's
permutation, the same minibatch and micro-batch chunks, train mode, autocast) without gradients, before any
optimiser step, so the ratio of the first minibatch is exactly 1. ``sampling`` keeps the sampler's values
(Flow-GRPO's train_sd3.py:886 uses ``sample["log_probs"]`` from the rollout). ``auto`` recomputes when any
arithmetic is below fp32 (``mixed_precision`` set, or a bf16/fp16 denoiser): fp32 runs agree to ~1e-6 and
keep the cheaper path; a rule on the measured drift would need the recompute pass to measure it anyway.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from tafs.models.backbone import Backbone, Cond
from tafs.train.passes import action_rows, micro_chunks, policy_step, trained_actions
from tafs.train.shard import local_rows

Trainer = Any  # tafs.train.trainer.Trainer, which imports this module (no import cycle)

OLD_LOGPROB = ("auto", "sampling", "recompute")
LOW_PRECISION = (torch.float16, torch.bfloat16)


def wants_recompute(mode: str, mixed_precision: str, backbone: Backbone) -> bool:
    """Whether ``mode`` recomputes the old log-probs for this run (``auto``: any arithmetic below fp32)."""
    if mode != "auto":
        return mode == "recompute"
    return mixed_precision != "no" or any(p.dtype in LOW_PRECISION for p in backbone.denoiser().parameters())


def first_permutation(gen: torch.Generator, total: int) -> torch.Tensor:
    """The permutation ``Trainer.optimise`` draws first, without advancing ``gen``."""
    state = gen.get_state()
    perm = torch.randperm(total, generator=gen)
    gen.set_state(state)
    return perm


@torch.no_grad()
def recompute_old_log_probs(trainer: Trainer, traj, cond: Cond, gen: torch.Generator,
                            rows: tuple[int, int, int]) -> torch.Tensor:
    """The old log-probs (N_local, T) as the first inner epoch's training pass computes them: the chunks of
    ``Trainer.optimise`` and the forward of ``Trainer._action_loss`` (transition under autocast, then
    ``method.log_prob``); untrained actions keep the sampler's values."""
    cfg, (start, stop, total) = trainer.cfg, rows
    trainer.backbone.denoiser().train()
    out = traj.log_probs.clone()
    actions = trained_actions(traj.trained)
    for mb in first_permutation(gen, total).chunk(cfg.minibatches):
        for chunk in micro_chunks(local_rows(mb, start, stop).to(out.device), cfg.micro_batch):
            for j, sub in action_rows(traj.trained, chunk, actions):
                out[sub, j] = policy_step(trainer, traj, sub, j, cond.index(sub))[0].to(out.dtype)
    return out


def training_pass(trainer: Trainer, traj, cond: Cond, weights: torch.Tensor, gen: torch.Generator,
                  rows: tuple[int, int, int]) -> dict:
    """``trainer.optimise`` with the old log-probs recomputed when configured, the CFG negative branch detached
    when configured (``train.cfg_detach_uncond``), and ``ratio_max_abs_log`` added to its statistics."""
    trainer.probe.reset()
    with trainer.backbone.uncond_detached(trainer.cfg.cfg_detach_uncond):
        if trainer.recompute_old:
            traj = replace(traj, log_probs=recompute_old_log_probs(trainer, traj, cond, gen, rows))
        stats = trainer.optimise(traj, cond, weights, gen, rows)
    return {**stats, "ratio_max_abs_log": trainer.probe.result(trainer.shard.world, trainer.accel.device)}


class RatioProbe:
    """max |logp_new - logp_old| over the trained entries seen before the iteration's first optimiser step
    (the first minibatch of the first inner epoch): 0 up to the arithmetic when the old log-probs are exact."""

    def __init__(self) -> None:
        self.value, self.open = 0.0, True

    def reset(self) -> None:
        self.value, self.open = 0.0, True

    def see(self, max_abs_log_ratio: torch.Tensor) -> None:
        if self.open:
            self.value = max(self.value, float(max_abs_log_ratio))

    def close(self) -> None:
        self.open = False

    def result(self, world: int, device: torch.device) -> float:
        """The maximum over processes (each saw its share of the first minibatch)."""
        if world == 1:
            return self.value
        import torch.distributed as dist

        t = torch.tensor([self.value], device=device, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)
