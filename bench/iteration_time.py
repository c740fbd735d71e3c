"""Iteration time of TAFS-GRPO vs the SDE baselines (the paper's Table 2 speed claim). Not a test.

Every method is built from its preset in config.yaml (``train`` deep-merged with
``methods.<name>.train``), with B, G and the reward fixed for all of them, and one full iteration
(sampling, reward, optimisation) of ``tafs.train.trainer.Trainer`` is timed per method in one
process with warm-up and repeats. The trainer's own phase times (sample / reward / optimise) are
averaged into the CSV. The model-compute floor of a TAFS iteration is timed in two parts: the K+1
no-grad forwards of the batch, and the K forward+backward passes per minibatch; the TAFS overhead
over that floor is split into sampling, reward, optimisation and the rest.

Backbones (``--backbone``):
- ``toy``: the toy SD3-class model (``--model`` folder, or a random one of the default size);
  writes bench/results/iteration_time.csv;
- ``sd3-medium``: an SD3.5-Medium-sized transformer with random weights on 512 px latents, bf16 on
  CUDA (bench/sd3_backbone.py), with peak GPU memory and the MFU of the training passes; writes
  bench/results/iteration_time_sd3.csv. ``sd3-tiny`` is the same code path at test size (CPU);
- ``auto`` (default): ``toy``, plus ``sd3-medium`` when a CUDA GPU is present.

``--record-plan`` also records the CUDA rows of the ``sd3-medium`` run in the package's measurements,
tafs/planning/data/gpu_measurements.json (``tafs.planning.measured``), which ``python -m tafs plan`` reads for its
training estimate and MFU: commit that file to ship the measurement.

    python bench/iteration_time.py --model results/models/base --repeats 3 --warmup 1
    python bench/iteration_time.py --backbone sd3-medium            # on a GPU: B = 2, G = 8
    python bench/iteration_time.py --backbone sd3-medium --record-plan   # ... and record it for `tafs plan`
    python bench/iteration_time.py --profile                         # + cProfile of TAFS iterations
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import io
import platform
import pstats
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import yaml

from tafs.config import deep_merge, from_dict
from tafs.grid import base_train
from tafs.io import write_csv
from tafs.models.backbone import Backbone, Cond
from tafs.planning import measured
from tafs.tasks import registry as tasks
from tafs.train import cost
from tafs.train.trainer import Trainer, TrainConfig

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_METHODS = ("tafs_grpo", "flow_grpo", "dance_grpo", "mix_grpo")
FLOOR_PROMPT = "a red square and a blue ring"
TAFS = "tafs_grpo"
FLOORS = ("tafs_floor_forward", "tafs_floor_backward", "tafs_compute_floor")
PHASES = ("time_sample_s", "time_reward_s", "time_opt_s", "time_iter_s")  # Trainer.iterate()'s phase times


# -- configuration -----------------------------------------------------------------------------------

def load_config(path: str | Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def method_train_dict(config: dict, name: str, prompts: int, group: int, scorer: str | None) -> dict:
    """The trainer config of method ``name`` as the DAG builds it, with what the benchmark fixes for all.

    B and G are the benchmark's; the reward is the toy dense score (the config's learned ``clip``
    reward needs a trained scorer folder) unless ``scorer`` points at one, in which case the config's
    reward mix is kept and the scorer path is handed to the ``clip`` factory.
    """
    methods = config.get("methods", {})
    if name not in methods:
        raise KeyError(f"method {name!r} is not in config.yaml's methods: {sorted(methods)}")
    base = base_train(config, tasks.from_config(config))  # the task's rewards unless train sets them
    override = copy.deepcopy((methods[name] or {}).get("train", {}))
    cfg = deep_merge(base, override)
    cfg["prompts_per_iter"], cfg["group_size"] = prompts, group
    advantage = cfg.setdefault("advantage", {})
    if scorer:
        cfg["reward_kwargs"] = deep_merge(cfg.get("reward_kwargs", {}), {"clip": {"path": scorer}})
    else:
        advantage["rewards"] = {"toy_dense": 1.0}
    return cfg


def method_settings(cfg: TrainConfig) -> dict:
    """The sampler settings that matter for the method (the others are left empty)."""
    m = cfg.method
    annealed = m.sampler == "annealed"
    return {"sampler": m.sampler, "n_annealed": m.n_annealed if annealed else "",
            "n_steps": "" if annealed else m.n_steps, "eta": "" if annealed else m.eta,
            "timestep_fraction": m.timestep_fraction if m.timestep_fraction is not None else "",
            "window": m.window if m.sampler == "mix_sde" else "", "n_adv": cfg.advantage.n_adv,
            "rewards": "+".join(cfg.advantage.rewards)}


# -- timing ------------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def sync_after(obj: object, attr: str, device: torch.device) -> None:
    """Make ``obj.attr(...)`` wait for the GPU before returning, so that the trainer's wall-clock phase
    times (taken with ``time.time()`` around sampling and optimisation) see finished kernels."""
    if device.type != "cuda":
        return
    fn = getattr(obj, attr)

    def wrapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        return out

    setattr(obj, attr, wrapped)


def summarise(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "mean_s": statistics.fmean(times), "min_s": min(times),
            "repeats": len(times)}



def bench_method(tr: Trainer, warmup: int, repeats: int) -> dict:
    """Time full iterations; returns wall-clock stats and the means of the trainer's phase times."""
    logged: list[dict] = []

    def step() -> None:
        logged.append(tr.iterate())
        tr.iteration += 1

    times = time_calls(step, warmup, repeats, tr.accel.device)
    timed = logged[warmup:]
    return {**summarise(times), **{k: statistics.fmean(r[k] for r in timed) for k in PHASES}}


def floor_inputs(tr: Trainer) -> tuple[torch.Tensor, Cond, list[float]]:
    cfg, bb = tr.cfg, tr.backbone
    n = cfg.prompts_per_iter * cfg.group_size
    x = torch.randn((n, *bb.latent_shape), device=tr.accel.device)
    k = cfg.method.n_annealed
    return x, tr.encode([FLOOR_PROMPT] * n), [1 - i / (k + 1) for i in range(k + 1)]


def floor_forward(tr: Trainer, x: torch.Tensor, cond: Cond, sigmas: list[float]) -> None:
    """TAFS sampling's model compute: K+1 no-grad forwards of the whole batch, nothing else."""
    tr.backbone.denoiser().eval()
    with torch.no_grad():
        for s in sigmas:
            tr.backbone.predict_x0(x, torch.full((len(x),), s, device=x.device), cond)


def floor_backward(tr: Trainer, x: torch.Tensor, cond: Cond, sigmas: list[float]) -> None:
    """TAFS optimisation's model compute: K forward+backward passes per minibatch, no optimiser."""
    bb, cfg = tr.backbone, tr.cfg
    bb.denoiser().train()
    for _ in range(cfg.inner_epochs):
        for mb in torch.arange(len(x), device=x.device).chunk(cfg.minibatches):
            c = cond.index(mb)
            for s in sigmas[:-1]:
                bb.predict_x0(x[mb], torch.full((len(mb),), s, device=x.device), c).float().pow(2).mean().backward()
            tr.opt.zero_grad(set_to_none=True)


def floor_rows(tr: Trainer, warmup: int, repeats: int) -> list[dict]:
    x, cond, sigmas = floor_inputs(tr)
    dev = tr.accel.device
    fwd = summarise(time_calls(lambda: floor_forward(tr, x, cond, sigmas), warmup, repeats, dev))
    bwd = summarise(time_calls(lambda: floor_backward(tr, x, cond, sigmas), warmup, repeats, dev))
    nfe = tr.method.nfe_accounting()
    total = {k: fwd[k] + bwd[k] for k in ("median_s", "mean_s", "min_s")}
    return [
        {"method": FLOORS[0], "nfe_old": nfe["nfe_old"], "nfe_theta": 0, **fwd},
        {"method": FLOORS[1], "nfe_old": 0, "nfe_theta": nfe["nfe_theta"], **bwd},
        # the sum of the two parts' statistics (they are timed separately)
        {"method": FLOORS[2], **nfe, **total, "repeats": repeats},
    ]


def overhead_breakdown(tafs: dict, fwd: dict, bwd: dict) -> dict:
    """Where TAFS's time above its compute floor goes, from means (so that the parts add up)."""
    parts = {
        "overhead_sampling_s": tafs["time_sample_s"] - fwd["mean_s"],
        "overhead_reward_s": tafs["time_reward_s"],
        "overhead_opt_s": tafs["time_opt_s"] - bwd["mean_s"],
        "overhead_rest_s": tafs["mean_s"] - tafs["time_iter_s"],
    }
    return {"overhead_total_s": tafs["mean_s"] - fwd["mean_s"] - bwd["mean_s"], **parts}


def write_profile(tr: Trainer, iterations: int, path: Path) -> None:
    """cProfile of a few full TAFS iterations: the top 30 entries by cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(iterations):
        tr.iterate()
        tr.iteration += 1
    sync(tr.accel.device)
    prof.disable()
    buf = io.StringIO()
    buf.write(f"cProfile of {iterations} TAFS-GRPO iterations (B = {tr.cfg.prompts_per_iter}, "
              f"G = {tr.cfg.group_size})\n")
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(30)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue())
    print(f"wrote {path}")


# -- one suite (one backbone, every method) ----------------------------------------------------------

@dataclass
class Suite:
    """One backbone's benchmark: how to build a fresh backbone and where the CSV goes."""

    name: str
    make_backbone: Callable[[], Backbone]
    out: Path
    prompts: int
    group: int
    gpu_metrics: bool  # peak memory and MFU columns (the SD3 suite)
    peak_flops: float | None = None
    info: dict | None = None
    train_prompts: list = field(default_factory=list)  # the config's task's training prompts


def run_suite(suite: Suite, config: dict, methods: list[str], a: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tafs-bench-") as tmp:
        suite.train_prompts = tasks.from_config(config).load_prompts("train")
        for name in methods:
            cfg = from_dict(TrainConfig, method_train_dict(config, name, suite.prompts, suite.group, a.scorer),
                            f"methods.{name}")
            rows.extend(bench_one(suite, name, cfg, Path(tmp) / name, a))
    return rows


def bench_one(suite: Suite, name: str, cfg: TrainConfig, ckpt: Path, a: argparse.Namespace) -> list[dict]:
    """Build the method's trainer on a fresh backbone, time it (and the floor for TAFS), free it."""
    cuda = torch.cuda.is_available()
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    tr = Trainer(suite.make_backbone(), cfg, ckpt, suite.train_prompts)
    dev = tr.accel.device
    sync_after(tr.method, "sample", dev)
    sync_after(tr, "optimise", dev)
    nfe = tr.method.nfe_accounting()
    row = {"method": name, **method_settings(cfg), **nfe, "beta": cfg.beta,
           "nfe_ref": cost.reference_passes(nfe, cfg.beta),
           **bench_method(tr, a.warmup, a.repeats)}
    if suite.gpu_metrics:
        row.update(gpu_metrics(tr, row, suite.peak_flops, dev))
    print(f"[{suite.name}] {name:12s} {row['median_s']:.3f} s/iter (sample {row['time_sample_s']:.3f}, "
          f"reward {row['time_reward_s']:.3f}, opt {row['time_opt_s']:.3f}; "
          f"NFE old/theta {row['nfe_old']}/{row['nfe_theta']})", flush=True)
    out = [row]
    if name == TAFS:
        out.extend(floor_rows(tr, a.warmup, a.repeats))
        row.update(overhead_breakdown(row, out[1], out[2]))
        if a.profile:
            stem = "profile_tafs" if suite.name == "toy" else f"profile_tafs_{suite.name}"
            write_profile(tr, a.profile_iters, suite.out.parent / f"{stem}.txt")
    tr.accel.free_memory()  # drop the accelerator's references to the model and optimiser
    del tr
    gc.collect()
    return out


def sd3_module():
    """bench/sd3_backbone.py, loaded by path: bench/ is not a package, and this file runs as a script
    or is loaded by path from the tests."""
    import importlib.util
    import sys

    name = "tafs_bench_sd3_backbone"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH_DIR / "sd3_backbone.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before exec: dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def gpu_metrics(tr: Trainer, row: dict, peak_flops: float | None, dev: torch.device) -> dict:
    """Peak memory since the trainer was built, and the model FLOP utilisation of the optimisation phase.

    MFU = FLOPs of one forward+backward on a minibatch (counted once, untimed) x the forward+backward
    passes of an iteration / (mean optimisation time x peak FLOP/s); left empty without a known peak.
    """
    sd3 = sd3_module()
    out: dict = {}
    if dev.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    flops = sd3.train_pass_flops(tr)
    passes = sd3.train_passes_per_iteration(tr)
    out.update({"train_flops_per_pass": flops, "train_passes": passes,
                "train_tflop_per_iter": flops * passes / 1e12})
    if peak_flops and dev.type == "cuda":
        out["mfu"] = flops * passes / (row["time_opt_s"] * peak_flops)
    return out


def sd3_suite(a: argparse.Namespace, name: str) -> Suite:
    sd3 = sd3_module()
    spec = sd3.bench_config(name)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = sd3.default_dtype(dev)
    peak = a.peak_tflops * 1e12 if a.peak_tflops else None
    if peak is None and dev.type == "cuda":
        peak = sd3.peak_bf16_flops(torch.cuda.get_device_name(dev))
        if peak is None:
            print(f"unknown peak FLOP/s of {torch.cuda.get_device_name(dev)!r}: pass --peak-tflops for the MFU")
    info = {"backbone": name, "dtype": str(dtype).removeprefix("torch."), "latent": "x".join(
        str(s) for s in (spec.latent_size, spec.latent_size, spec.in_channels)), "text_tokens": spec.text_tokens,
        "gradient_checkpointing": a.grad_checkpointing, "peak_tflops": peak / 1e12 if peak else ""}
    return Suite(name=name, out=Path(a.sd3_out), prompts=a.prompts or 2, group=a.group, gpu_metrics=True,
                 peak_flops=peak, info=info,
                 make_backbone=lambda: sd3.build_random_sd3(spec, dev, dtype, seed=0,
                                                            gradient_checkpointing=a.grad_checkpointing))


def machine_info(device: torch.device, threads: int) -> dict:
    info = {"device": str(device), "cpu": platform.processor() or platform.machine(), "threads": threads,
            "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def finish_rows(rows: list[dict], extra: dict) -> None:
    """Ratios to TAFS-GRPO (when it ran) and the run's machine / size info on every row.

    ``ratio_vs_tafs``: whole iterations (medians); ``compute_ratio_vs_tafs``: sampling + optimisation only (the
    trainer's phase means, reward time left out), which is what the compute model (tafs.train.cost)
    predicts as ``predicted_ratio_vs_tafs``; ``model_error`` = measured compute ratio / predicted - 1."""
    t = {r["method"]: r for r in rows}
    tafs = t.get(TAFS)
    for r in rows:
        r["ratio_vs_tafs"] = r["median_s"] / tafs["median_s"] if tafs else ""
        if tafs and r["method"] not in FLOORS:
            measured = compute_seconds(r) / compute_seconds(tafs)
            predicted = cost.predicted_ratio(r, tafs)
            r.update(compute_ratio_vs_tafs=measured, predicted_ratio_vs_tafs=predicted,
                     model_error=measured / predicted - 1)
        r.update(extra)


def compute_seconds(row: dict) -> float:
    """Model compute of an iteration as the trainer times it: sampling + optimisation (no reward)."""
    return row["time_sample_s"] + row["time_opt_s"]


def report(rows: list[dict], suite: str, target_pct: float) -> None:
    """Speed-ups, and the overhead over the compute floor with where it goes."""
    t = {r["method"]: r for r in rows}
    if TAFS not in t:
        return
    tafs = t[TAFS]
    ups = [f"{t[m]['median_s'] / tafs['median_s']:.2f}x vs {m}" for m in t if m != TAFS and m not in FLOORS]
    if ups:
        print(f"\n[{suite}] speed-up of TAFS-GRPO: " + ", ".join(ups))
    for m in (m for m in t if m != TAFS and m not in FLOORS):
        r = t[m]
        print(f"[{suite}] {m}: sampling + optimisation {r['compute_ratio_vs_tafs']:.2f}x TAFS-GRPO's, compute model "
              f"{r['predicted_ratio_vs_tafs']:.2f}x (NFE {r['nfe_old']} / {r['nfe_theta']} trained"
              f"{' + ' + str(r['nfe_ref']) + ' KL reference' if r.get('nfe_ref') else ''}): "
              f"{100 * r['model_error']:+.1f} %")
    fwd, bwd, floor = (t[f] for f in FLOORS)
    pct = 100 * (tafs["median_s"] / floor["median_s"] - 1)
    verdict = "met" if pct <= target_pct else "MISSED"
    print(f"[{suite}] overhead over the compute floor (medians): {pct:.1f} % (target <= {target_pct:g} %, {verdict})")
    print(f"[{suite}] where it goes (means over repeats; floor = {fwd['mean_s']:.3f} s of K+1 forwards "
          f"+ {bwd['mean_s']:.3f} s of K fwd+bwd per minibatch):")
    total = tafs["overhead_total_s"]
    labels = {"overhead_sampling_s": "sampling beyond its forwards", "overhead_reward_s": "reward + advantages",
              "overhead_opt_s": "optimisation beyond its fwd+bwd", "overhead_rest_s": "rest of the iteration"}
    for key, label in labels.items():
        share = 100 * tafs[key] / total if total else float("nan")
        print(f"    {label:33s} {tafs[key]:8.3f} s  ({share:5.1f} % of the {total:.3f} s overhead)")


# -- entry point -------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", choices=["auto", "toy", "sd3-tiny", "sd3-medium"], default="auto")
    p.add_argument("--model", default=None, help="toy base model folder (default: a random toy base)")
    p.add_argument("--config", default=str(REPO_ROOT / "config.yaml"), help="where the method presets come from")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    p.add_argument("--prompts", type=int, default=None, help="B (default: 8 on the toy, 2 on SD3)")
    p.add_argument("--group", type=int, default=8, help="G")
    p.add_argument("--scorer", default=None,
                   help="trained CLIP-scorer folder: keep config.yaml's reward mix (default: toy_dense only)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grad-checkpointing", action="store_true", help="SD3: gradient checkpointing")
    p.add_argument("--peak-tflops", type=float, default=None, help="SD3: the GPU's peak bf16 TFLOP/s (MFU)")
    p.add_argument("--target-overhead", type=float, default=10.0, help="percent over the compute floor")
    p.add_argument("--profile", action="store_true", help="cProfile TAFS iterations into profile_tafs.txt")
    p.add_argument("--profile-iters", type=int, default=3)
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "iteration_time.csv"))
    p.add_argument("--sd3-out", default=str(BENCH_DIR / "results" / "iteration_time_sd3.csv"))
    p.add_argument("--record-plan", nargs="?", const=str(measured.MEASURED), default=None, metavar="JSON",
                   help="record the sd3-medium run's CUDA rows for `tafs plan` (default file: the package's "
                        "tafs/planning/data/gpu_measurements.json)")
    a = p.parse_args(argv)
    if a.repeats < 1 or a.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    return a


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    """Run the benchmark; returns the rows written, per suite (for tests)."""
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    config = load_config(a.config)
    names = {"auto": ["toy", *(["sd3-medium"] if torch.cuda.is_available() else [])]}.get(a.backbone, [a.backbone])
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="tafs-bench-base-") as tmp:
        for name in names:
            suite = toy_suite(a, Path(tmp)) if name == "toy" else sd3_suite(a, name)
            rows = run_suite(suite, config, a.methods, a)
            dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            finish_rows(rows, {**machine_info(dev, a.threads), "B": suite.prompts, "G": suite.group,
                               **(suite.info or {})})
            write_csv(suite.out, rows)
            print(f"wrote {suite.out}")
            report(rows, suite.name, a.target_overhead)
            if a.record_plan and name == "sd3-medium":
                n = measured.record(rows, Path(a.record_plan))
                print(f"recorded {n} CUDA rows in {a.record_plan}" if n else
                      "--record-plan: no CUDA rows to record (this run was not on a GPU)")
            results[name] = rows
    return results


def toy_suite(a: argparse.Namespace, tmp: Path) -> Suite:
    from tafs.models.loading import load_backbone

    base = Path(a.model) if a.model else tmp / "toy-base"
    if not a.model:
        from tafs.models.toy import ToyModelConfig, build_toy
        from tafs.toyworld.prompts import vocabulary

        build_toy(ToyModelConfig(), vocabulary(), seed=0).save(base)
    return Suite(name="toy", make_backbone=lambda: load_backbone(base), out=Path(a.out),
                 prompts=a.prompts or 8, group=a.group, gpu_metrics=False,
                 info={"model": str(a.model or "random toy (default size)")})


if __name__ == "__main__":
    main()
