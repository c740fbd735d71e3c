"""Iteration time of TAFS-GRPO vs the SDE baselines (the paper's Table 2 speed claim). Not a test.

Same backbone, same prompts per iteration and group size: each method's full iteration (sampling,
reward, optimisation) is timed side by side in one process with warm-up and repeats, plus the
model-compute floor of a TAFS iteration (its K+1 no-grad forwards and K forward+backward passes
alone). Writes bench/results/iteration_time.csv (with machine info) and prints the ratios.

    python bench/iteration_time.py                       # CPU toy backbone (random weights)
    python bench/iteration_time.py --model results/models/base --repeats 10
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tafs.config import from_dict
from tafs.models.backbone import Cond
from tafs.models.toy import ToyModelConfig, build_toy
from tafs.train.trainer import Trainer, TrainConfig
from tafs.toyworld.prompts import vocabulary

# Each baseline as its paper / DESIGN §8 configures it; all share B, G and the optimiser settings.
METHODS: dict[str, dict] = {
    "tafs_grpo": {"method": {"sampler": "annealed", "n_annealed": 3}},
    "flow_grpo": {"method": {"sampler": "flow_sde", "n_steps": 10, "eta": 0.7},
                  "advantage": {"n_adv": 1}},
    "dance_grpo": {"method": {"sampler": "dance_sde", "n_steps": 16, "eta": 0.3, "train_fraction": 0.6},
                   "advantage": {"n_adv": 1}},
    "mix_grpo": {"method": {"sampler": "mix_sde", "n_steps": 10, "eta": 0.7, "window": 4},
                 "advantage": {"n_adv": 1}},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_calls(fn, warmup: int, repeats: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def make_trainer(base_dir: Path, overrides: dict, common: dict, ckpt: Path) -> Trainer:
    from tafs.config import deep_merge
    from tafs.models.loading import load_backbone

    cfg = from_dict(TrainConfig, deep_merge(common, overrides), "train")
    return Trainer(load_backbone(base_dir), cfg, ckpt)


def tafs_floor(tr: Trainer) -> None:
    """K+1 no-grad forwards of the whole batch and K forward+backward passes per minibatch, nothing else."""
    cfg, bb = tr.cfg, tr.backbone
    n = cfg.prompts_per_iter * cfg.group_size
    x = torch.randn((n, *bb.latent_shape), device=tr.accel.device)
    cond = tr.encode(["a red square and a blue ring"] * n)
    k = cfg.method.n_annealed
    with torch.no_grad():
        for i in range(k + 1):
            bb.predict_x0(x, torch.full((n,), 1 - i / (k + 1), device=x.device), cond)
    for mb in torch.arange(n).chunk(cfg.minibatches):
        c = Cond(cond.hidden[mb], cond.pooled[mb])
        for i in range(k):
            out = bb.predict_x0(x[mb], torch.full((len(mb),), 1 - i / (k + 1), device=x.device), c)
            out.float().pow(2).mean().backward()
        tr.opt.zero_grad(set_to_none=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="base model folder (default: a random toy base of the default size)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/results/iteration_time.csv")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="tafs-bench-"))
    base = Path(a.model) if a.model else tmp / "base"
    if not a.model:
        build_toy(ToyModelConfig(), vocabulary(), seed=0).save(base)
    common = {"prompts_per_iter": a.prompts, "group_size": a.group, "minibatches": 2, "inner_epochs": 1,
              "lora": {"rank": 32, "alpha": 64}}
    rows = []
    trainers = {name: make_trainer(base, ov, common, tmp / name) for name, ov in METHODS.items()}
    for name, tr in trainers.items():
        def step(tr=tr):
            tr.iterate()
            tr.iteration += 1
        times = time_calls(step, a.warmup, a.repeats, tr.accel.device)
        rows.append({"method": name, **tr.method.nfe_accounting(), "median_s": statistics.median(times),
                     "min_s": min(times), "repeats": a.repeats})
        print(f"{name:12s} {rows[-1]['median_s']:.3f} s/iter  (NFE old/theta {rows[-1]['nfe_old']}/{rows[-1]['nfe_theta']})",
              flush=True)
    floor = time_calls(lambda: tafs_floor(trainers["tafs_grpo"]), a.warmup, a.repeats, trainers["tafs_grpo"].accel.device)
    rows.append({"method": "tafs_compute_floor", "nfe_old": 4, "nfe_theta": 3, "median_s": statistics.median(floor),
                 "min_s": min(floor), "repeats": a.repeats})
    t = {r["method"]: r["median_s"] for r in rows}
    machine = {"device": str(trainers["tafs_grpo"].accel.device), "cpu": platform.processor() or platform.machine(),
               "threads": a.threads, "torch": torch.__version__, "B": a.prompts, "G": a.group,
               "model": str(a.model or "random toy (default size)")}
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name(0)
    for r in rows:
        r["ratio_vs_tafs"] = r["median_s"] / t["tafs_grpo"]
        r.update(machine)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from tafs.io import atomic_path

    with atomic_path(out) as tmpf, open(tmpf, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\nspeed-up of TAFS-GRPO: {t['flow_grpo'] / t['tafs_grpo']:.2f}x vs Flow-GRPO, "
          f"{t['dance_grpo'] / t['tafs_grpo']:.2f}x vs DanceGRPO, {t['mix_grpo'] / t['tafs_grpo']:.2f}x vs MixGRPO; "
          f"overhead over the compute floor {100 * (t['tafs_grpo'] / t['tafs_compute_floor'] - 1):.1f} %")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
