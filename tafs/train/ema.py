"""An exponential moving average of the LoRA weights, as Flow-GRPO keeps one (config ``train.ema``).

What the reference does (yifan123/flow_grpo, scripts/train_sd3.py and flow_grpo/ema.py):

- the average starts as a copy of the trainable (LoRA) parameters before training (train_sd3.py:443-445,
  ``EMAModuleWrapper(..., decay=0.9, update_step_interval=8)``; ema.py:17);
- ``ema.step(params, global_step)`` runs after every training batch with ``global_step`` = optimiser steps done
  so far (train_sd3.py:952-955); it updates only when ``(global_step + 1) % update_step_interval == 0``, with
  decay ``min((1 + global_step) / (10 + global_step), decay)`` (ema.py:33-49): ``ema += (1 - d) (p - ema)``;
- sampling (the rollouts) uses the live weights; evaluation and the saved LoRA use the average
  (train_sd3.py:218-219, 315-316 and 328-332 copy it in and back out).

Here ``step(n)`` is called after the n-th optimiser step (n = 1, 2, ...). With gradient accumulation A > 1
the reference calls ``ema.step`` A times per optimiser step with the same ``global_step`` (once per training
batch, the weights unchanged between them), so each due update is applied A times (decay d^A); ``repeat``
reproduces that (its 32-GPU configs: A = num_batches_per_epoch // 2 = 2, config/grpo.py:83-88).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EmaConfig:
    enabled: bool = False  # Flow-GRPO: train.ema = True in every config/grpo.py preset (base.py: False)
    decay: float = 0.9  # the decay once warmed up (train_sd3.py:445)
    every: int = 8  # update after every this many optimiser steps (update_step_interval, train_sd3.py:445)
    warmup: bool = True  # decay min((1 + n) / (10 + n), decay) at optimiser step n (ema.py:33-37); false: decay
    repeat: int = 1  # apply each due update this many times (the reference's gradient accumulation, see above)

    def __post_init__(self) -> None:
        for key in ("enabled", "warmup"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"ema.{key} must be true or false, got {getattr(self, key)!r}")
        if not 0 <= self.decay < 1:
            raise ValueError(f"ema.decay must be in [0, 1), got {self.decay}")
        if self.every < 1:
            raise ValueError(f"ema.every must be >= 1, got {self.every}")
        if self.repeat < 1:
            raise ValueError(f"ema.repeat must be >= 1, got {self.repeat}")

    def decay_at(self, n: int) -> float:
        """The decay of the update after optimiser step n."""
        return min((1 + n) / (10 + n), self.decay) if self.warmup else self.decay


class LoraEma:
    """The average of ``params`` (in fp32, on their device) and the count of optimiser steps seen."""

    def __init__(self, cfg: EmaConfig, params: list[torch.nn.Parameter]):
        self.cfg, self.params = cfg, params
        self.shadow = [p.detach().float().clone() for p in params]
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        """Count one optimiser step; update the average when due."""
        self.steps += 1
        n = self.steps
        if (n + 1) % self.cfg.every:
            return
        keep = self.cfg.decay_at(n) ** self.cfg.repeat  # `repeat` updates with the same weights
        for s, p in zip(self.shadow, self.params, strict=True):
            s.mul_(keep).add_(p.detach().float(), alpha=1 - keep)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The parameters hold the average inside the block (to export it), their own values again after."""
        saved = [p.detach().clone() for p in self.params]
        try:
            with torch.no_grad():
                for p, s in zip(self.params, self.shadow, strict=True):
                    p.copy_(s.to(p.dtype))
            yield
        finally:
            with torch.no_grad():
                for p, v in zip(self.params, saved, strict=True):
                    p.copy_(v)

    @staticmethod
    def weights_of(ema: LoraEma | None) -> contextlib.AbstractContextManager:
        """``ema.applied()``, or nothing to do without an EMA."""
        return ema.applied() if ema is not None else contextlib.nullcontext()

    def state_dict(self) -> dict:
        return {"steps": self.steps, "shadow": [s.clone() for s in self.shadow]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"EMA state holds {len(state['shadow'])} tensors, the model {len(self.shadow)}")
        self.steps = int(state["steps"])
        self.shadow = [s.to(p.device, torch.float32).clone() for s, p in zip(state["shadow"], self.params)]
