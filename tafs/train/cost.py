"""The compute model of one GRPO iteration, in forward-pass units of the denoiser.

Sampling costs one no-grad forward per model call (``nfe_old``, from ``Method.nfe_accounting``); each trained
action costs a forward and a backward pass in the optimisation, counted as ``BACKWARD_FACTOR`` = 3 forwards (a
backward pass is about two forwards of matrix work), and a KL term (beta > 0) one more no-grad forward of the
reference policy per trained action (``nfe_ref``). Reward models, decoding and the optimiser step are left out:
they are timed apart (``time_reward_s``), and on a GPU they are small next to the denoiser. With classifier-free
guidance every pass doubles for every method alike, so ratios between methods do not change.

The paper's Table 2 step counts give TAFS-GRPO (4 calls, 3 trained) 13 units, Flow-GRPO (10 / 6) 28, DanceGRPO
(25 / 14) 67 and MixGRPO (25 / 4) 37: 2.15x, 5.15x and 2.85x TAFS-GRPO's iteration (the paper's measured times,
248 / 646 / 334 s against 116 s, are 2.14x, 5.57x and 2.88x). Flow-GRPO with its KL (beta > 0) is 34 units, 2.62x.
"""

from __future__ import annotations

from typing import Mapping

BACKWARD_FACTOR = 3.0  # a trained action: forward + backward = 3 forwards


def iteration_units(accounting: Mapping[str, float], backward_factor: float = BACKWARD_FACTOR) -> float:
    """Forward-pass units per sample of one iteration: nfe_old + backward_factor x nfe_theta + nfe_ref."""
    return (float(accounting["nfe_old"]) + backward_factor * float(accounting["nfe_theta"])
            + float(accounting.get("nfe_ref", 0)))


def reference_passes(accounting: Mapping[str, float], beta: float) -> int:
    """nfe_ref: the reference policy's forwards per sample (one per trained action when the KL term is on)."""
    return int(accounting["nfe_theta"]) if beta > 0 else 0


def predicted_ratio(accounting: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """How many times ``reference``'s iteration (e.g. TAFS-GRPO's) an iteration of ``accounting`` costs."""
    return iteration_units(accounting) / iteration_units(reference)
