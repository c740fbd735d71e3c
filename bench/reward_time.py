"""Seconds to score a batch of images with each reward model (a benchmark, not a test).

The models are the tiny random ones of the real classes (tafs.rewards.tiny): what it measures is the cost of the
real loaders' preprocessing and plumbing at 512 px, not of the full-size networks (those need their weights and a
GPU; `python -m tafs plan` estimates them from their configs).

    python bench/reward_time.py --images 64 --size 512 --out bench/results/reward_time_cpu.csv

Writes one CSV row per reward: load seconds, scoring seconds (median of ``--repeats`` after one warm-up),
images per second, the command and the machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tafs.io import atomic_path
from tafs.rewards import registry, runtime
from tafs.rewards.tiny import build, model_folder

# reward -> its factory kwargs given the folder of each tiny model it loads
TINY = {
    "clip": {"path": "clip"},
    "pickscore": {"path": "pickscore"},
    "hpsv2": {"path": "hpsv2"},
    "imagereward": {"path": "imagereward"},
    "geneval": {"detector": "geneval_detector", "clip": "geneval_clip"},
    "unifiedreward": {"path": "unifiedreward", "max_new_tokens": 8},
}
GENEVAL_META = {"tag": "two_object", "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1}],
                "exclude": []}


def _kwargs(reward: str, root: Path) -> dict:
    out = {}
    for key, value in TINY[reward].items():
        if isinstance(value, str) and key in ("path", "detector", "clip"):
            folder = root / value
            if not folder.exists():
                build(value, folder)
            value = str(model_folder(value, folder))
        out[key] = value
    return out


def time_reward(reward: str, root: Path, images: torch.Tensor, repeats: int) -> dict:
    runtime.clear_resident()
    t0 = time.perf_counter()
    fn = registry.build(reward, **_kwargs(reward, root))
    load = time.perf_counter() - t0
    prompts = ["a photo of a dog and a cat"] * len(images)
    meta = [GENEVAL_META] * len(images)
    fn(prompts[:2], meta[:2], images[:2])  # warm-up
    runs = []
    for _ in range(repeats):
        batch = images.clone()  # a new tensor: GenEval's two rewards reuse verdicts on the same one
        t = time.perf_counter()
        fn(prompts, meta, batch)
        runs.append(time.perf_counter() - t)
    sec = statistics.median(runs)
    return {"reward": reward, "images": len(images), "size": images.shape[-1], "load_s": round(load, 3),
            "score_s": round(sec, 3), "images_per_s": round(len(images) / sec, 2), "repeats": repeats}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rewards", nargs="*", default=list(TINY))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench/results/reward_time_cpu.csv")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    # smooth random images (what a generator gives is smooth, not white noise)
    low = torch.rand(a.images, 3, 8, 8)
    images = torch.nn.functional.interpolate(low, size=(a.size, a.size), mode="bicubic").clamp(0, 1)
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for reward in a.rewards:
            row = time_reward(reward, Path(tmp), images, a.repeats)
            row.update(device="cpu", threads=a.threads, machine=f"{platform.machine()} {os.cpu_count()} cores",
                       torch=torch.__version__, command=command)
            print(f"{reward:<14} load {row['load_s']:.2f} s  score {row['score_s']:.2f} s  "
                  f"{row['images_per_s']:.1f} img/s", flush=True)
            rows.append(row)
    with atomic_path(a.out) as tmp_out:
        with open(tmp_out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
