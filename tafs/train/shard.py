"""One training over N processes: how the global batch is split and put back together.

The config's batch is global: ``prompts_per_iter`` prompts x ``group_size`` samples per iteration whatever the
number of processes N. Groups never span processes: process r holds the contiguous groups
``[r * B/N, (r+1) * B/N)`` (so B must be divisible by N). Every process draws the same prompts and the noise of
the whole batch from the same generators (tafs.sampling.noise) and keeps its rows, so sample i is the same
sample for any N. Rewards are gathered, so advantages are computed on the global batch (a group is normalised
together; a batch-wide statistic sees every sample) on every process alike. Minibatches are chunks of one
global permutation; each process's loss is its samples' share of the minibatch mean, and the LoRA gradients
are summed over processes once per optimiser step (an all-reduce of a few MB), which gives the gradient of the
global minibatch mean exactly. With N = 1 every step reduces to the single-process computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shard:
    rank: int = 0
    world: int = 1

    def check(self, prompts_per_iter: int) -> None:
        if prompts_per_iter % self.world:
            raise ValueError(f"train.prompts_per_iter = {prompts_per_iter} (the global number of prompts an "
                             f"iteration) must be divisible by the {self.world} training processes: groups never "
                             "span processes; change prompts_per_iter or resources.train.gpu")

    def groups(self, n_groups: int) -> slice:
        per = n_groups // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def samples(self, n_groups: int, group_size: int) -> tuple[int, int]:
        """[start, stop) of this process's samples in the global batch."""
        g = self.groups(n_groups)
        return g.start * group_size, g.stop * group_size

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate every process's rows in rank order (= the global batch order)."""
        if self.world == 1:
            return local
        import torch.distributed as dist

        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    def sum_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients over processes in one flat all-reduce (a missing gradient counts as zero)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def sum_scalars(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()


def local_rows(mb: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """The global indices of minibatch ``mb`` that this process holds, as local indices (order kept)."""
    mine = mb[(mb >= start) & (mb < stop)]
    return mine - start
