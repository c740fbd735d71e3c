"""``cps``: Coefficients-Preserving Sampling on an ``n_steps`` schedule (by default the model's scheduler grid),
every non-final step trained; ``method.eta`` in (0, 1] (1 is the TAFS re-noise step).

``cps_logprob: reference`` runs it as its authors' code does: log-probs -mean((a - mu)^2) over non-batch dims, no
1 / (2 std^2), no normaliser, both recorded while sampling and re-evaluated in the loss (so ratios are exp of
their difference), and the KL term mean((mu - mu_ref)^2) (IamCreateAI/FlowCPS, yifan123/flow_grpo sde_type
"cps"). ``gaussian`` (default) keeps log N(a; mu, std^2 I).
"""

from __future__ import annotations

from typing import ClassVar

from tafs.sampling.sde import cps_transition
from tafs.sampling.trajectory import Transition
from tafs.train.samplers.base import MethodCfg, SDESampler


class CPS(SDESampler):
    name: ClassVar[str] = "cps"
    default_grid: ClassVar[str | None] = "scheduler"
    options: ClassVar[frozenset[str]] = SDESampler.options | {"cps_logprob"}

    def validate(self, cfg: MethodCfg) -> None:
        super().validate(cfg)
        if cfg.eta > 1:
            raise ValueError(f"method.eta must be in (0, 1] for the cps sampler, got {cfg.eta}")

    def transition(self, cfg: MethodCfg) -> Transition:
        return cps_transition(cfg.eta, cfg.cps_logprob)
