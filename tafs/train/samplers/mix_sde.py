"""``mix_sde``: MixGRPO, the Flow-GRPO SDE inside a sliding window of ``method.window`` steps, the Euler ODE
outside; only the window is trained. The window starts at 0 and advances by one step every ``window_every``
iterations, wrapping around (by default on shift(linspace(1, 0, n_steps + 1))).

- ``window_wrap: false``: the window stops at its last full position instead of restarting at 0 (MixGRPO's launch
  scripts pass ``--roll_back``, i.e. restart at 0). With ``window_rule: mixgrpo`` it is the MixGRPO start instead
  (a restart at 0, or a stop at n_steps - 2).
- ``window_rule: mixgrpo``: MixGRPO's window range(start, min(start + window, n_steps - 2)) (narrower at the end,
  possibly empty).
- ``last_step_noise``, ``kl: flow_grpo``, ``timestep_quant`` as for ``flow_sde`` (MixGRPO's own code never noises
  its last step).
"""

from __future__ import annotations

from typing import ClassVar

from tafs.sampling.sde import flow_sde_transition
from tafs.sampling.trajectory import Transition
from tafs.train.reference import full_window_start, mixgrpo_window
from tafs.train.samplers.base import DRIFT_OPTIONS, MethodCfg, SDESampler


def window_start(cfg: MethodCfg, iteration: int) -> int:
    """window_rule full: first step of the window (:func:`tafs.train.reference.full_window_start`)."""
    return full_window_start(iteration, cfg.window_every, cfg.n_steps - 1, cfg.window, cfg.window_wrap)


def window_steps(cfg: MethodCfg, iteration: int) -> list[int]:
    """The window's steps at ``iteration`` (window_rule full or MixGRPO's, possibly empty)."""
    if cfg.window_rule == "mixgrpo":
        return mixgrpo_window(iteration, cfg.window_every, cfg.n_steps, cfg.window, cfg.window_wrap)
    start = window_start(cfg, iteration)
    return list(range(start, start + cfg.window))


class MixSDE(SDESampler):
    name: ClassVar[str] = "mix_sde"
    default_grid: ClassVar[str | None] = "linspace"
    options: ClassVar[frozenset[str]] = SDESampler.options | DRIFT_OPTIONS | {"last_step_noise", "window_wrap",
                                                                              "window_rule"}

    def validate(self, cfg: MethodCfg) -> None:
        super().validate(cfg)
        if cfg.window < 1:
            raise ValueError(f"method.window must be >= 1, got {cfg.window}")
        if cfg.window > cfg.n_steps - 1:
            raise ValueError(f"method.window must be <= n_steps - 1 = {cfg.n_steps - 1} (the last step is "
                             f"deterministic), got {cfg.window}")
        if cfg.window_every < 1:
            raise ValueError(f"method.window_every must be >= 1, got {cfg.window_every}")

    def stochastic_mask(self, cfg: MethodCfg, iteration: int) -> list[bool]:
        steps = set(window_steps(cfg, iteration))
        return [j in steps for j in range(self.num_actions(cfg))]

    def nfe_theta(self, cfg: MethodCfg) -> int:
        """The window (whose last MixGRPO positions are narrower)."""
        return cfg.window

    def transition(self, cfg: MethodCfg) -> Transition:
        return flow_sde_transition(cfg.eta, cfg.timestep_quant)
