"""The GRPO loop shared by TAFS-GRPO and every baseline (DESIGN §6-8), on ``accelerate``.

Per iteration: B prompts x G samples are drawn with the method's sampler under the current policy
(old log-probs come with the trajectory), every scored one-step estimate is rewarded, advantages are
normalised per prompt group and step, then ``inner_epochs`` passes of ``minibatches`` optimiser steps
maximise the clipped surrogate minus beta KL to the reference (the base: LoRA disabled).

Everything random in an iteration comes from generators seeded by (seed, iteration, rank), so a run
resumed from a checkpoint continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from tafs.checkpoint import save_checkpoint
from tafs.config import ConfigError, redact
from tafs.io import append_jsonl, atomic_dir, atomic_path, read_jsonl, write_json
from tafs.models.backbone import Backbone, Cond, LoraSpec
from tafs.models.text_cache import TextEmbeddingCache
from tafs.prompts import Prompt, check_metadata, draw_prompts
from tafs.rewards import registry
from tafs.sampling.noise import initial_noise, sharded
from tafs.sampling.trajectory import Trajectory, concat
from tafs.seeding import seed_everything, step_generators
from tafs.train import snapshots
from tafs.train.advantages import (
    AdvantageConfig,
    action_weights,
    clip_weights,
    mix_advantages,
    prompt_groups,
    shuffle_within_groups,
)
from tafs.train.ema import EmaConfig, LoraEma
from tafs.train.loss import ppo_clip_loss
from tafs.train.methods import Method, MethodConfig
from tafs.train.passes import action_rows, actions_per_sample, micro_chunks, policy_step, trained_actions
from tafs.train.periodic_eval import PeriodicEval
from tafs.train.preempt import Preempted, StopRequest, agreed
from tafs.train.ratio import OLD_LOGPROB, RatioProbe, training_pass, wants_recompute
from tafs.train.resume import checkpoint_identity, drop_metrics_after, resume_state
from tafs.train.scoring import finite, first_scored, reward_rows, scored_count
from tafs.train.shard import Shard, local_rows

log = logging.getLogger(__name__)

PROMPT_SAMPLING = ("balanced", "uniform")
LOSS_STATS = ("loss", "policy", "kl", "clip_frac", "approx_kl", "ratio")


@dataclass(frozen=True)
class LoraConfig:
    rank: int = 32
    alpha: int = 64
    targets: tuple[str, ...] | None = None  # module names; None: the model family's (docs/real-models.md §1)
    init: str = "default"  # peft's init_lora_weights: "default" (Kaiming-uniform A) or "gaussian" (flow_grpo's)

    def __post_init__(self) -> None:
        from tafs.models.lora import check_init

        check_init(self.init)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    iterations: int = 300
    prompts_per_iter: int = 8  # B
    group_size: int = 8  # G
    lr: float = 3e-4
    weight_decay: float = 1e-4
    clip_eps: float = 1e-3
    beta: float = 0.0  # KL weight
    inner_epochs: int = 1
    minibatches: int = 2  # optimiser steps per epoch
    grad_clip: float = 1.0
    mixed_precision: str = "no"  # no | fp16 | bf16 (accelerate)
    checkpoint_every: int = 25
    prompt_sampling: str = "balanced"  # balanced: a category uniformly, then a prompt in it | uniform
    decode_chunk: int = 0  # decode this many one-step estimates at a time for the rewards (0: all at once)
    micro_batch: int = 0  # samples per forward/backward pass of a process (0: its whole share of a minibatch)
    sample_chunk: int = 0  # samples a process draws per sampler call (0: all at once)
    text_cache: int | None = None  # prompts whose text embeddings stay cached on the CPU (None: all; 0: none)
    # the old log-probs of the ratio: the sampler's ("sampling"), or re-evaluated in the training pass's layout
    # before the first update ("recompute"); "auto": recompute below fp32 (tafs/train/ratio.py)
    old_logprob: str = "auto"
    cfg_detach_uncond: bool = False  # training pass: no gradient through the CFG negative branch (Flow-GRPO, SD3)
    ema: EmaConfig = field(default_factory=EmaConfig)  # an EMA of the LoRA weights, exported (tafs/train/ema.py)
    max_runtime_min: float | None = None  # checkpoint and stop (tafs.train.preempt) before this budget is passed
    snapshot_every: int | None = None  # an intermediate adapter every N iterations (tafs/train/snapshots.py)
    snapshot_keep_last: int | None = None  # keep the K newest snapshots (None: all)
    eval_every: int | None = None  # evaluate every M iterations (tafs/train/periodic_eval.py)
    eval_prompts: int = 16  # the first P prompts of the evaluation file
    eval_job: dict = field(default_factory=dict)  # {"prompts": file, "eval": EvalConfig kwargs}; the DAG fills it in
    lora: LoraConfig = field(default_factory=LoraConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    # Keyword arguments of each reward's factory, e.g. {"clip": {"path": "results/models/clip_scorer"}}.
    reward_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prompt_sampling not in PROMPT_SAMPLING:
            raise ValueError(f"train.prompt_sampling must be one of {PROMPT_SAMPLING}, got {self.prompt_sampling!r}")
        if self.old_logprob not in OLD_LOGPROB:
            raise ValueError(f"train.old_logprob must be one of {OLD_LOGPROB}, got {self.old_logprob!r}")
        if not isinstance(self.cfg_detach_uncond, bool):
            raise ValueError(f"train.cfg_detach_uncond must be true or false, got {self.cfg_detach_uncond!r}")
        snapshots.check(self.snapshot_every, self.snapshot_keep_last)
        PeriodicEval.check(self.eval_every, self.eval_prompts)


def check_config(cfg: TrainConfig) -> None:
    """What a training run refuses, checked without a model: the DAG calls it for every run before any job."""
    method = Method(cfg.method)
    n_scored = method.num_scored_steps
    if cfg.advantage.n_adv > n_scored:
        raise ConfigError(f"advantage.n_adv = {cfg.advantage.n_adv} exceeds the {n_scored} scored steps "
                         f"({method.sampler.num_actions_rule}); use 1 <= n_adv <= {n_scored}")
    if not cfg.advantage.rewards:
        raise ConfigError("advantage.rewards must name at least one reward, e.g. {\"toy_dense\": 1.0} "
                         "(the DAG fills in the task's training rewards)")
    registry.check_names(cfg.advantage.rewards, "advantage.rewards")
    if cfg.prompts_per_iter * cfg.group_size < cfg.minibatches:
        raise ConfigError(f"minibatches = {cfg.minibatches} exceeds the {cfg.prompts_per_iter * cfg.group_size} "
                         "samples of an iteration (prompts_per_iter x group_size)")


class Trainer:
    """GRPO on ``backbone`` with prompts drawn from ``prompts`` (a task's train prompt file)."""

    identity: dict | None = None  # what checkpoints are keyed by (tafs.train.resume); the CLI sets the job's

    def __init__(self, backbone: Backbone, cfg: TrainConfig, ckpt_dir: Path, prompts: Sequence[Prompt]):
        from accelerate import Accelerator

        check_config(cfg)
        if not prompts:
            raise ValueError("no training prompts")
        self.cfg, self.ckpt_dir = cfg, Path(ckpt_dir)
        self.accel = Accelerator(mixed_precision=cfg.mixed_precision)
        self.shard = Shard(self.accel.process_index, self.accel.num_processes)
        self.shard.check(cfg.prompts_per_iter)
        seed_everything(cfg.seed)
        self.backbone = backbone
        backbone.to(self.accel.device)
        for m in (*backbone.frozen_modules(), backbone.denoiser()):
            m.requires_grad_(False)
        targets = tuple(cfg.lora.targets or backbone.lora_targets)
        backbone.add_lora(LoraSpec(rank=cfg.lora.rank, alpha=cfg.lora.alpha, target_modules=targets,
                                   init=cfg.lora.init), seed=cfg.seed)
        self.params = backbone.trainable_parameters()
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
        # The grad scaler (fp16) comes from prepare(). The model is not wrapped in DDP: the LoRA gradients are
        # summed over processes once per optimiser step by the Shard (tafs/train/shard.py), which also lets a
        # process hold none of a minibatch's samples.
        self.opt = self.accel.prepare(self.opt)
        self.method = Method(cfg.method, backbone.default_shift)
        check_metadata(prompts, {r: registry.spec(r, "train.advantage.rewards").needs for r in cfg.advantage.rewards},
                       "training prompts")
        self.prompts = list(prompts)
        self.rewards = {name: registry.build(name, **cfg.reward_kwargs.get(name, {})) for name in cfg.advantage.rewards}
        self.periodic_eval = PeriodicEval.build(cfg, self.rewards) if self.accel.is_main_process else None
        self.iteration = 0
        self.reward_seconds: dict[str, float] = {}  # each reward's scoring time in the last iteration
        # The text encoders are frozen: each prompt is encoded once and kept off the accelerator (or, with
        # text_cache set, only the most recent ones; 0 = encode every batch).
        self.encode = TextEmbeddingCache(backbone, max_prompts=cfg.text_cache)
        self.ema = LoraEma(cfg.ema, self.params) if cfg.ema.enabled else None
        self.recompute_old = wants_recompute(cfg.old_logprob, cfg.mixed_precision, backbone)
        self.probe = RatioProbe()

    # -- helpers -----------------------------------------------------------------------------------
    def score_steps(self, prompts: list[Prompt], estimates: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rewards (N, k) of the k one-step estimates given (``x0_hats[:, -k:]``, tafs.train.scoring)."""
        n, steps = estimates.shape[:2]
        images = self.backbone.decode(estimates.flatten(0, 1), self.cfg.decode_chunk).float().cpu()
        rep = [p for p in prompts for _ in range(steps)]
        texts, meta = [p.text for p in rep], [p.metadata for p in rep]
        out = {}
        for k, fn in self.rewards.items():  # each reward model scores the whole k x B x G batch in one call
            t = time.time()
            out[k] = finite(k, fn(texts, meta, images)).float().reshape(n, steps)
            self.reward_seconds[k] = time.time() - t
        return out

    # -- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        from peft import get_peft_model_state_dict

        if not self.accel.is_main_process:
            return
        state = {"iteration": self.iteration, "opt": self.opt.state_dict(),
                 "lora": get_peft_model_state_dict(self.accel.unwrap_model(self.backbone.denoiser()))}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        save_checkpoint(self.ckpt_dir, state, checkpoint_identity(self))

    def try_resume(self) -> bool:
        from peft import set_peft_model_state_dict

        state = resume_state(self.ckpt_dir, checkpoint_identity(self), asdict(self.cfg), self.accel.device)
        if state is None:
            return False
        set_peft_model_state_dict(self.accel.unwrap_model(self.backbone.denoiser()), state["lora"])
        self.opt.load_state_dict(state["opt"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.iteration = state["iteration"]
        drop_metrics_after(self.ckpt_dir / "metrics.jsonl", self.iteration)  # those iterations are recomputed
        return True

    # -- one iteration -----------------------------------------------------------------------------
    def iterate(self) -> dict:
        cfg, it = self.cfg, self.iteration
        # The same generators, prompts and global noise on every process (tafs/train/shard.py): each keeps its rows.
        rng, gen = step_generators(cfg.seed, it)
        drawn = draw_prompts(self.prompts, cfg.prompts_per_iter, rng, cfg.prompt_sampling)
        everyone = [p for p in drawn for _ in range(cfg.group_size)]
        start, stop = self.shard.samples(len(drawn), cfg.group_size)
        group = everyone[start:stop]
        groups = torch.arange(len(drawn)).repeat_interleave(cfg.group_size) if cfg.advantage.group_by == "draw" \
            else prompt_groups([p.text for p in everyone])
        cond = self.encode([p.text for p in group])
        dev = self.accel.device

        t0 = time.time()
        self.backbone.denoiser().eval()
        noise = initial_noise(len(drawn), cfg.group_size, tuple(self.backbone.latent_shape), gen,
                              cfg.method.same_init_noise)[start:stop].to(dev)
        traj = self.sample(cond, noise, gen, it, (start, stop, len(everyone)))
        t1 = time.time()
        n_est = traj.x0_hats.shape[1]
        k = scored_count(n_est, cfg.advantage.n_adv)  # only the steps the advantages read are decoded and scored
        scores = self.score_steps(group, traj.x0_hats[:, -k:])
        rewards = {r: self.shard.gather(v.to(dev)).cpu() for r, v in scores.items()}
        adv = mix_advantages(rewards, cfg.advantage.rewards, groups, cfg.advantage.aggregation, cfg.advantage.eps,
                             cfg.advantage.std)
        weights = action_weights(adv, traj.action_step - 1, cfg.advantage.mode, cfg.advantage.n_adv,
                                 first_scored(n_est, k))
        if cfg.advantage.shuffle_control:
            weights = shuffle_within_groups(weights, groups, gen)
        weights = clip_weights(weights, cfg.advantage.clip)
        t2 = time.time()
        stats = training_pass(self, traj, cond, weights[start:stop].to(dev), gen, (start, stop, len(everyone)))
        t3 = time.time()

        return {"iteration": it, **stats, "time_sample_s": t1 - t0, "time_reward_s": t2 - t1, "time_opt_s": t3 - t2,
                "time_iter_s": t3 - t0, **{f"time_reward/{k}_s": v for k, v in self.reward_seconds.items()},
                **self.method.nfe_accounting(), **reward_rows(rewards, first_scored(n_est, k) + 2)}

    def sample(self, cond: Cond, noise: torch.Tensor, gen: torch.Generator, it: int,
               rows: tuple[int, int, int]) -> Trajectory:
        """This process's samples, ``sample_chunk`` at a time. Each chunk restarts from the generator's state
        and draws the global noise of every step (tafs.sampling.noise), so a sample's noise does not depend
        on the chunking, and the generator ends where one pass over the batch leaves it."""
        start, stop, total = rows
        n, size = stop - start, self.cfg.sample_chunk or (stop - start)
        state, parts = gen.get_state(), []
        for a in range(0, n, size):
            b = min(n, a + size)
            gen.set_state(state)
            with sharded(start + a, start + b, total):
                idx = torch.arange(a, b, device=noise.device)
                parts.append(self.method.sample(self.backbone, cond.index(idx) if (a, b) != (0, n) else cond,
                                                noise[a:b], gen, it))
        return concat(parts)

    def optimise(self, traj, cond: Cond, weights: torch.Tensor, gen: torch.Generator,
                 rows: tuple[int, int, int]) -> dict:
        """Minibatches are chunks of one permutation of the global batch (``rows`` = this process's
        [start, stop) of ``total``); each process backpropagates its samples' share of the minibatch mean.

        The loss is, per sample, the mean over its trained actions, then the mean over the minibatch. With
        per-sample subsets (``traj.trained`` (B, T), DanceGRPO) each sample's untrained steps contribute
        nothing: a step's loss covers the samples that train it, weighted by their count / (|minibatch| k),
        k the actions each sample trains, as DanceGRPO's loss / (accumulation x k) per sample and step
        (train_grpo_flux.py:603); the logged stats are then one mean over the minibatch's trained entries."""
        cfg, (start, stop, total), multi = self.cfg, rows, self.shard.world > 1
        self.backbone.denoiser().train()
        per_sample = traj.trained.ndim == 2
        trained = trained_actions(traj.trained)
        n_trained = actions_per_sample(traj.trained)
        slots = ["all"] if per_sample else trained
        agg: dict[str, list[float]] = {k: [] for k in LOSS_STATS}
        norms = []
        for _ in range(cfg.inner_epochs):
            perm = torch.randperm(total, generator=gen)
            for mb in perm.chunk(cfg.minibatches):
                local = local_rows(mb, start, stop).to(self.accel.device)
                sums = {(k, j): 0.0 for k in agg for j in slots}  # none of the minibatch here: zeros
                for chunk in micro_chunks(local, cfg.micro_batch):
                    for j, sub in action_rows(traj.trained, chunk, trained):
                        w = len(sub) / len(mb)  # this process's share of the minibatch mean (exact for one)
                        parts = self._action_loss(traj, cond.index(sub), sub, j, weights)
                        self.probe.see(parts.max_abs_log_ratio)
                        self.accel.backward(parts.loss / n_trained * w)
                        slot, stat_w = ("all", w / n_trained) if per_sample else (j, w)
                        for k, v in zip(agg, (parts.loss, parts.policy, parts.kl, parts.clip_frac, parts.approx_kl,
                                              parts.ratio_mean)):
                            sums[(k, slot)] += float(v.detach()) * stat_w
                for k in agg:
                    agg[k] += [sums[(k, j)] for j in slots]
                self.shard.sum_grads(self.params)
                norms.append(float(self.accel.clip_grad_norm_(self.params, cfg.grad_clip)))
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                self._after_step()
        if multi:  # each entry: the global minibatch mean (shares sum to 1 over processes)
            flat = self.shard.sum_scalars([v for k in agg for v in agg[k]], self.accel.device)
            per = len(flat) // len(agg)
            agg = {k: flat[i * per:(i + 1) * per] for i, k in enumerate(agg)}
        out = {k: float(np.mean(v)) if v else float("nan") for k, v in agg.items()}  # nan: no trained action
        out["grad_norm"] = float(np.mean(norms))
        return out

    def _after_step(self) -> None:
        """After each optimiser step: the ratio probe has seen the first minibatch; the EMA counts the step."""
        self.probe.close()
        if self.ema is not None:
            self.ema.step()

    def _action_loss(self, traj, cond: Cond, mb: torch.Tensor, j: int, weights: torch.Tensor):
        logp, mean, std = policy_step(self, traj, mb, j, cond)
        kl = None
        if self.cfg.beta > 0:
            s, s_next = float(traj.sigmas[j]), float(traj.sigmas_next[j])
            with torch.no_grad(), self.backbone.adapter_disabled(), self.accel.autocast():
                mean_ref, _, _ = self.method.transition(self.backbone, traj.states[mb, j], s, s_next, cond)
            kl = self.method.kl(mean, mean_ref, std, s, s_next)
        return ppo_clip_loss(logp, traj.log_probs[mb, j], weights[mb, j], self.cfg.clip_eps, kl, self.cfg.beta)

    # -- the run -----------------------------------------------------------------------------------
    def run(self, resume: bool = True, stop_after: int | None = None,
            on_iteration: Callable[[dict], None] | None = None) -> dict:
        """Train to ``cfg.iterations`` (or stop early after ``stop_after`` iterations, for tests); the main
        process hands every iteration's row to ``on_iteration`` (live tracking)."""
        resumed = resume and self.try_resume()
        mpath = self.ckpt_dir / "metrics.jsonl"
        if not resumed:
            mpath.unlink(missing_ok=True)
            snapshots.clear(self)
        t0 = time.time()
        bar = tqdm(total=self.cfg.iterations, initial=self.iteration, desc="train", unit="it", mininterval=5,
                   disable=not self.accel.is_main_process)
        done = 0
        with StopRequest(self.cfg.max_runtime_min) as stop:  # SIGTERM / SIGUSR1: stop after an iteration
            while self.iteration < self.cfg.iterations and (stop_after is None or done < stop_after):
                row = self.iterate()
                self.iteration += 1
                done += 1
                row.update(PeriodicEval.after_iteration(self))  # eval/<metric> on this iteration's row when due
                if self.accel.is_main_process:
                    append_jsonl(mpath, row)
                    if on_iteration is not None:
                        on_iteration(row)
                bar.update(1)
                bar.set_postfix(reward=f"{row[f'reward/{next(iter(self.rewards))}/final_mean']:.3f}")
                snapshots.after_iteration(self)  # before the checkpoint: a resumed run re-writes a missed one
                if self.iteration % self.cfg.checkpoint_every == 0 or self.iteration == self.cfg.iterations:
                    self.save_checkpoint()
                why = agreed(stop.reason(row["time_iter_s"]), lambda v: self.shard.sum_scalars(v, self.accel.device))
                if why and self.iteration < self.cfg.iterations:
                    self.save_checkpoint()
                    bar.close()
                    raise Preempted(self.iteration, why)
        bar.close()
        return {"iterations": self.iteration, "wall_s": time.time() - t0, "resumed": resumed}

    def export(self, out_dir: Path, summary: dict) -> None:
        """Write the run folder: adapter/ (peft, safetensors), metrics.jsonl, train_summary.json."""
        if not self.accel.is_main_process:
            return
        out_dir = Path(out_dir)
        with atomic_dir(out_dir / "adapter") as tmp, LoraEma.weights_of(self.ema):
            self.backbone.save_adapter(tmp)  # the EMA weights when kept: what Flow-GRPO saves and evaluates
        rows = read_jsonl(self.ckpt_dir / "metrics.jsonl")
        with atomic_path(out_dir / "metrics.jsonl") as tmp:
            tmp.write_text((self.ckpt_dir / "metrics.jsonl").read_text())
        sec = [r["time_iter_s"] for r in rows]
        write_json(out_dir / "train_summary.json", {
            **summary, "config": redact(asdict(self.cfg)), **self.method.nfe_accounting(),
            "shift": self.method.cfg.shift,
            "processes": self.shard.world, "adapter_weights": "ema" if self.ema else "last",
            "sec_per_iter": float(np.median(sec)) if sec else None,
            "final_reward": {k: float(np.mean([r[f"reward/{k}/final_mean"] for r in rows[-10:]]))
                             for k in self.rewards},
        })
