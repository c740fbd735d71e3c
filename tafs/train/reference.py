"""How the baselines' own code samples and trains, and the ``method.*`` options that reproduce it (DESIGN §8).

References (the snapshots read; line numbers are of these files):
  FG = yifan123/flow_grpo @ ac4c86e (scripts/train_sd3.py, flow_grpo/diffusers_patch/*.py, config/grpo.py)
  DG = XueZeyue/DanceGRPO @ 15cc71d (fastvideo/train_grpo_flux.py, scripts/finetune/finetune_flux_grpo*.sh)
  MG = Tencent-Hunyuan/MixGRPO @ e5cdd6a (fastvideo/train_grpo_flux.py, fastvideo/utils/grpo_states.py,
       fastvideo/utils/sampling_utils.py, scripts/finetune/finetune_flux_grpo_MixGRPO.sh)

==================  ========================================  ===========================================  ==========
option              reference file:line                       what the reference does                      our default
==================  ========================================  ===========================================  ==========
sigma_grid          FG sd3_pipeline_with_logprob.py:121-127   samples on the pipeline scheduler's grid     scheduler
                    (retrieve_timesteps, sigmas=None)         (SD3: linspace(1, sigma_min, N) shifted, 0)  (flow_sde,
                    DG train_grpo_flux.py:311-313             shift(linspace(1, 0, N + 1)), --shift        cps);
                    MG train_grpo_flux.py:187-189             the same (sd3_time_shift)                    linspace
                                                                                                           (dance,mix)
timestep_fraction   FG train_sd3.py:345, 864                  trains steps 0 .. int(num_steps * f) - 1,    None: every
  (flow_sde)                                                  in order, the same for every sample          action
timestep_fraction   DG train_grpo_flux.py:512-519, 551-561,   drops the last step (to 0), then per sample  None: the
  (dance_sde)       570-572                                   a randperm of the N - 1 steps; trains the    shared
                                                              first int((N - 1) * f) of it                 subset of
                                                                                                           train_fraction
loss average        DG train_grpo_flux.py:603                 each step's loss / (accum * int((N-1) f)):   same
  (dance_sde)                                                 per sample the mean over its trained steps,
                                                              then the mean over the minibatch's samples
timestep_quant      DG train_grpo_flux.py:231-238, 506, 279   the transformer sees int(sigma * 1000)       0 (exact)
                    MG sampling_utils.py:64-71,               / 1000 (float32 sigma, int() truncates);
                       train_grpo_flux.py:387, 132            the SDE step and x0 = x - sigma v use the
                    DG flux_step 141-148, MG 170-175          exact sigma; in sampling and the loss alike
window_rule         MG grpo_states.py:87-99, 141-148;         start = k = it // iters_per_group (+1 per    full
  (mix_sde)         train_grpo_flux.py:915-928, 945-947       move, --prog_overlap_step 1), window
                                                              range(start, min(start + w, N - 2)):
                                                              never step N - 2, the last windows shrink,
                                                              empty at start = N - 2; --roll_back: start
                                                              N - 1 -> 0 (period N - 1), else stays N - 2
                    (MixGRPO.sh:57-60, 164-168)               (--roll_back --prog_overlap, every 25, w 4)
kl                  FG train_sd3.py:895 (std_dev_t from       mean((mu - mu_ref)^2) / (2 std_dev_t^2),     gaussian
                    sd3_sde_with_logprob.py:47)               std_dev_t = eta sqrt(s / (1 - s)) = g, not
                                                              the step std g sqrt(-dt)
(no KL)             DG train_grpo_flux.py:603; MG :583,       DanceGRPO: no KL term; MixGRPO: kl_coeff *   beta 0
                    MixGRPO.sh kl_coeff=0.0                   0.5 (logp - logp_old)^2, kl_coeff 0
shift               DG finetune_flux_grpo*.sh (--shift 3),    Flux at 720 px with --shift 3 (the arg's     model's own
                    MG finetune_flux_grpo_MixGRPO.sh:151      default is 1.0); FG: the scheduler's shift
last_step_noise     FG sd3_pipeline_with_logprob.py:161,      every step incl. the last (to 0) is SDE;     false
                    sd3_sde_with_logprob.py:59                the image is that noisy sample
same_init_noise     DG finetune_flux_grpo.sh:57, MG .sh:155   --init_same_noise: one noise per prompt      false
==================  ========================================  ===========================================  ==========

Deliberate differences: DanceGRPO's last step is SDE while sampling but its image is the last x0 estimate
(train_grpo_flux.py:254); ours is the Euler step to 0, which is the same image. MixGRPO's ODE steps are Euler
(sampling_utils.py:198-199), as ours. MixGRPO's other window strategies (random, decay, exp_decay) and
non-overlapping moves (no --prog_overlap) are not built: its launch script uses progressive + overlap step 1.
"""

from __future__ import annotations

import math

import torch

WINDOW_RULES = ("full", "mixgrpo")
KL_RULES = ("gaussian", "flow_grpo")
SIGMA_GRIDS = ("scheduler", "linspace")


def flow_grpo_num_trained(n_steps: int, fraction: float) -> int:
    """FG train_sd3.py:345: ``int(num_steps * timestep_fraction)`` (trained steps 0 .. that - 1)."""
    return int(n_steps * fraction)


def dance_num_trained(n_actions: int, fraction: float) -> int:
    """DG train_grpo_flux.py:570: ``int(len(timesteps) * timestep_fraction)`` with len = N - 1 (the last step is
    dropped at :512-519)."""
    return int(n_actions * fraction)


def full_window_start(iteration: int, every: int, n_actions: int, window: int, wrap: bool) -> int:
    """Our original rule: the window's first step among P = n_actions - window + 1 full positions,
    k = iteration // every; k % P when wrapping, else min(k, P - 1)."""
    positions = n_actions - window + 1
    k = iteration // every
    return k % positions if wrap else min(k, positions - 1)


def mixgrpo_window(iteration: int, every: int, n_steps: int, window: int, roll_back: bool) -> list[int]:
    """MixGRPO's trained (and SDE) steps at ``iteration`` (0-based), progressive strategy with overlap step 1.

    GRPOTrainingStates(max_timesteps = N - 2) starts at 0 and advances by one every ``every`` iterations
    (grpo_states.py:87-99); past N - 2 it restarts at 0 (roll_back) or stays at N - 2. The window is
    ``range(cur, min(cur + window, N - 2))`` (grpo_states.py:148), possibly empty.
    """
    top = n_steps - 2
    k = iteration // every
    cur = k % (top + 1) if roll_back else min(k, top)
    return list(range(cur, min(cur + window, top)))


def model_sigma(sigma: float, quant: int) -> float:
    """The noise level the model is fed: ``sigma`` (quant 0), or ``int(sigma * quant) / quant`` computed like
    DG/MG (a float32 sigma times 1000, truncated: train_grpo_flux.py:231, sampling_utils.py:64). Ours is the
    float64 grid value rounded to float32, which can differ from their float32 grid in the last bit."""
    if not quant:
        return sigma
    return int(torch.tensor(sigma, dtype=torch.float32) * quant) / quant


def flow_grpo_kl_std(std: torch.Tensor | float, sigma: float, sigma_next: float) -> torch.Tensor | float:
    """FG's KL divides by 2 std_dev_t^2 with std_dev_t = g (sd3_sde_with_logprob.py:47), while the step's
    std is g sqrt(-dt) (:59): g = std / sqrt(sigma - sigma_next)."""
    return std / math.sqrt(sigma - sigma_next)


def per_sample_subsets(rand: torch.Tensor, k: int) -> torch.Tensor:
    """(B, T) bool: for each row, the k entries of smallest uniform value, i.e. the first k of a uniformly
    random permutation per sample (DG train_grpo_flux.py:551-561 draws one randperm per sample)."""
    ranks = rand.argsort(dim=1).argsort(dim=1)
    return ranks < k
