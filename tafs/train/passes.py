"""How the training pass walks an iteration's samples: minibatch -> micro-batch chunks -> trained actions -> the
rows of the chunk that train each action (all of them, or, with per-sample subsets (B, T), DanceGRPO's, those
whose subset holds the action). ``Trainer.optimise`` and the old-log-prob recompute (tafs.train.ratio) walk the
same units and evaluate the policy with the same function, so a recomputed log-prob is computed in exactly the
layout and precision of the loss."""

from __future__ import annotations

from typing import Any, Iterator

import torch

from tafs.models.backbone import Cond


def trained_actions(trained: torch.Tensor) -> list[int]:
    """The actions any sample trains: the indices of a (T,) mask, or of the columns of a (B, T) mask."""
    return torch.nonzero(trained.any(0) if trained.ndim == 2 else trained).flatten().tolist()


def actions_per_sample(trained: torch.Tensor) -> int:
    """k, the actions each sample trains: the (T,) mask's count, or the one count of a (B, T) mask (the loss
    weights of per-sample subsets assume every sample trains k actions)."""
    if trained.ndim == 1:
        return max(1, int(trained.sum()))
    counts = trained.sum(1).unique()
    if len(counts) > 1:
        raise ValueError(f"per-sample trained masks must train the same number of actions per sample, got "
                         f"{counts.tolist()}")
    return max(1, int(counts[0])) if len(counts) else 1


def micro_chunks(local: torch.Tensor, micro_batch: int) -> tuple[torch.Tensor, ...]:
    """This process's rows of a minibatch, ``micro_batch`` at a time (0: all at once); none when it holds none."""
    return local.split(micro_batch or max(1, len(local))) if len(local) else ()


def action_rows(trained: torch.Tensor, chunk: torch.Tensor, actions: list[int]) -> Iterator[tuple[int, torch.Tensor]]:
    """(j, rows): for each trained action j, the rows of ``chunk`` that train it (skipped when none does)."""
    for j in actions:
        rows = chunk[trained[chunk.cpu(), j].to(chunk.device)] if trained.ndim == 2 else chunk
        if len(rows):
            yield j, rows


def policy_step(trainer: Any, traj: Any, rows: torch.Tensor, j: int, cond: Cond
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-prob (R,), mean, std) of action j of ``rows`` under the current policy: the method's transition
    under autocast, then the log-prob the sampler recorded (``method.cps_logprob``)."""
    x, a = traj.states[rows, j], traj.actions[rows, j]
    s, s_next = float(traj.sigmas[j]), float(traj.sigmas_next[j])
    with trainer.accel.autocast():
        mean, std, _ = trainer.method.transition(trainer.backbone, x, s, s_next, cond)
    return trainer.method.log_prob(a, mean, std), mean, std
