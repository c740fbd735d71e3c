"""Per-action policy-gradient signal-to-noise ratio of GRPO in the toy world, against a shuffled-advantage
control (DESIGN §12). Not a test.

At the FIXED initial policy (the base model with a freshly initialised LoRA), ``--groups`` M independent
prompt groups of G samples are drawn by ``Trainer.iterate()`` itself (the method's sampler, ``score_steps``,
``mix_advantages``, ``action_weights``; only its optimiser step is replaced by a capture). For every trained
action j and every group, the gradient of ``Trainer._action_loss`` (the PPO-clip surrogate; at ratio 1 the
REINFORCE gradient -mean(A grad log pi)) w.r.t. all LoRA parameters is taken once with the real advantages
and once with the same advantages permuted within each group (``shuffle_within_groups``: the no-signal
control, on the same trajectories). Row ``all``: the mean over trained actions, what one optimiser step sees.

Statistics over the M per-group gradients g_i (flattened): gbar, tr(Sigma) = M/(M-1) mean ||g_i - gbar||^2,
unbiased signal ||mu||^2 = ||gbar||^2 - tr(Sigma)/M, per-group SNR = ||mu||^2 / tr(Sigma) (95 % bootstrap CI
over groups; real - shuffled on the same resamples: a paired CI), z = ||gbar||^2 / (tr(Sigma)/M) = 1 + M SNR
(about 1 for pure noise), SNR of a step of n samples = SNR * n / G, samples per step for SNR 1 = G / SNR.
Writes --out (CSV) and a Markdown table beside it; --append merges runs of other methods / modes.

    python bench/gradient_snr.py --methods tafs_grpo --modes integrated to_go --groups 256
    python bench/gradient_snr.py --methods flow_grpo --groups 128 --append
    python bench/gradient_snr.py --task toy_preference --scorer results/models/clip_scorer   # dense + clip
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from tafs.config import deep_merge, from_dict
from tafs.grid import base_train
from tafs.io import atomic_path, write_csv
from tafs.models.backbone import Cond
from tafs.models.loading import load_backbone
from tafs.sampling.trajectory import Trajectory
from tafs.tasks import registry as tasks
from tafs.train.advantages import MODES, action_weights, mix_advantages, shuffle_within_groups
from tafs.train.scoring import first_scored
from tafs.train.trainer import Trainer, TrainConfig

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CONTROLS = ("real", "shuffled")


# -- the statistic ----------------------------------------------------------------------------------

def _signal_noise(gram: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(||mu||^2, tr Sigma) estimated from groups with multiplicities ``w`` (R, M), rows summing to M.

    ||mu||^2 = the mean of <g_i, g_k> over pairs of DIFFERENT groups (= ||gbar||^2 - tr(Sigma)/M at w = 1), and
    tr Sigma = mean ||g_i||^2 - ||mu||^2 (= M/(M-1) mean ||g_i - gbar||^2 at w = 1). Pairs of a group with its own
    bootstrap copy are left out, so resampling does not count the noise ||g_i||^2 as signal."""
    d = np.diag(gram)
    off = np.einsum("ri,ij,rj->r", w, gram, w) - (w ** 2) @ d
    signal = off / (w.sum(1) ** 2 - (w ** 2).sum(1))
    return signal, w @ d / w.sum(1) - signal


def boot_snr(gram: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Per-group SNR of ``n_boot`` resamples of the groups (the same resamples for the same (M, seed): paired)."""
    m = gram.shape[0]
    rng = np.random.default_rng(seed)
    w = np.stack([np.bincount(rng.integers(m, size=m), minlength=m) for _ in range(n_boot)]).astype(np.float64)
    signal, tr = _signal_noise(gram, w)
    return signal / tr


def gram_stats(gram: np.ndarray, group_size: int, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """The SNR statistics of M per-group gradients given their Gram matrix <g_i, g_k> (M, M)."""
    gram = np.asarray(gram, dtype=np.float64)
    m = gram.shape[0]
    if m < 2:
        raise ValueError("need at least 2 groups")
    signal, tr = (float(v[0]) for v in _signal_noise(gram, np.ones((1, m))))
    snr = signal / tr if tr > 0 else float("nan")
    # z = ||gbar||^2 / (tr/M) = 1 + M * SNR: about 1 (spread ~ sqrt(2 / effective dims)) without signal
    out = {"per_group_snr": snr, "signal_sq": signal, "noise_tr": tr, "mean_grad_sq": signal + tr / m,
           "z": (signal + tr / m) / (tr / m) if tr > 0 else float("nan")}
    ci = np.percentile(boot_snr(gram, n_boot, seed), [2.5, 97.5]) if n_boot > 0 else (np.nan, np.nan)
    out["snr_ci_lo"], out["snr_ci_hi"] = (float(x) for x in ci)
    out["samples_for_snr1"] = group_size / snr if snr > 0 else float("inf")
    return out


def gram_of(grads: torch.Tensor) -> np.ndarray:
    """<g_i, g_k> (M, M) in fp64, a column block at a time."""
    return sum(c.double() @ c.double().T for c in torch.as_tensor(grads).split(1 << 16, dim=1)).numpy()


def snr_stats(grads: torch.Tensor | np.ndarray, group_size: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """The SNR statistics of per-group gradient vectors ``grads`` (M, D)."""
    return gram_stats(gram_of(torch.as_tensor(grads)), group_size, n_boot, seed)


# -- the trainer --------------------------------------------------------------------------------------

@dataclass
class Batch:
    """What one ``Trainer.iterate()`` hands its optimiser: B groups of G samples."""
    traj: Trajectory
    cond: Cond
    weights: torch.Tensor  # (B G, T): the configured mode's advantage weights
    rewards: dict[str, torch.Tensor]  # name -> (B G, S)
    groups: torch.Tensor  # (B G,) group ids 0..B-1


def train_config(config: dict, method: str, a: argparse.Namespace, scorer: str | None) -> TrainConfig:
    """Method ``method``'s config as the DAG builds it (``train`` + the preset), with the bench's G and mode."""
    methods = config.get("methods") or {}
    if method not in methods:
        raise KeyError(f"method {method!r} is not in config.yaml's methods: {sorted(methods)}")
    preset = copy.deepcopy((methods[method] or {}).get("train", {}))
    train = deep_merge(base_train(config, tasks.get(a.task, config)), preset)
    train.update(seed=a.seed, prompts_per_iter=a.batch_prompts, group_size=a.group)
    train["advantage"].update(mode=a.modes[0], shuffle_control=False)
    if "clip" in train["advantage"]["rewards"]:
        kw = dict((config.get("reward_models") or {}).get("clip") or {})
        train["reward_kwargs"] = {"clip": {**kw, "path": scorer}}
    return from_dict(TrainConfig, train, "train")


def draw_batches(tr: Trainer, n_batches: int) -> list[Batch]:
    """Run ``tr.iterate()`` for iterations 0..n-1 with the optimiser step replaced by a capture (the policy
    never moves), and the rewards of ``score_steps`` recorded."""
    out: list[Batch] = []
    seen: dict = {}
    score = tr.score_steps

    def scored(prompts, x0_hats):
        seen["rewards"] = score(prompts, x0_hats)
        return seen["rewards"]

    def capture(traj, cond, weights, gen, rows):
        seen.update(traj=traj, cond=cond, weights=weights.detach().clone())
        return {}

    tr.score_steps, tr.optimise = scored, capture
    try:
        for it in tqdm(range(n_batches), desc="sample", unit="batch", mininterval=5):
            tr.iteration = it
            tr.iterate()
            g = torch.arange(tr.cfg.prompts_per_iter).repeat_interleave(tr.cfg.group_size)
            out.append(Batch(seen["traj"], seen["cond"], seen["weights"], seen["rewards"], g))
    finally:
        del tr.score_steps, tr.optimise
        tr.iteration = 0
    return out


def mode_weights(tr: Trainer, b: Batch, mode: str) -> torch.Tensor:
    """The advantage weights of ``mode`` by the trainer's functions (checked against iterate()'s own)."""
    adv = tr.cfg.advantage
    k = next(iter(b.rewards.values())).shape[1]  # the scored estimates (the last n_adv: tafs.train.scoring)
    w = action_weights(mix_advantages(b.rewards, adv.rewards, b.groups, adv.aggregation, adv.eps),
                       b.traj.action_step - 1, mode, adv.n_adv, first_scored(b.traj.x0_hats.shape[1], k))
    if mode == adv.mode and not torch.allclose(w, b.weights.to(w), atol=1e-6):
        raise RuntimeError("recomputed advantage weights differ from Trainer.iterate()'s")
    return w


def group_grads(tr: Trainer, b: Batch, weights: torch.Tensor, j: int) -> tuple[torch.Tensor, float]:
    """(B, D): per group, the flattened gradient of action j's surrogate loss w.r.t. the LoRA parameters; and
    the largest |mean ratio - 1| seen (about 0 at the fixed policy: the loss is plain REINFORCE there)."""
    G, dev = tr.cfg.group_size, tr.accel.device
    rows, dev_ratio = [], 0.0
    for g in range(len(b.groups) // G):
        mb = torch.arange(g * G, (g + 1) * G, device=dev)
        parts = tr._action_loss(b.traj, b.cond.index(mb), mb, j, weights.to(dev))
        grads = torch.autograd.grad(parts.loss, tr.params, allow_unused=True)
        rows.append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten().float().cpu()
                               for x, p in zip(grads, tr.params)]))
        dev_ratio = max(dev_ratio, abs(float(parts.ratio_mean) - 1))
    return torch.stack(rows), dev_ratio


def measure(tr: Trainer, batches: list[Batch], a: argparse.Namespace) -> list[dict]:
    """Rows (action x control) per mode for one method, from the same trajectories."""
    trained = torch.stack([b.traj.trained for b in batches]).all(0).nonzero().flatten().tolist()
    if not trained:
        raise RuntimeError("no action is trained in every batch (dance_sde / mix_sde vary it): nothing to measure")
    m, G = sum(len(b.groups) for b in batches) // a.group, a.group
    shuffle_gen = torch.Generator().manual_seed(a.seed + 7919)
    t = batches[0].traj
    rows: list[dict] = []
    tr.backbone.denoiser().train()  # the mode the trainer's loss runs in
    for mode in a.modes:
        real = [mode_weights(tr, b, mode) for b in batches]
        weights = {"real": real, "shuffled": [shuffle_within_groups(w, b.groups, shuffle_gen)
                                              for w, b in zip(real, batches)]}
        total: dict[str, torch.Tensor] = {}
        worst = {"all": 0.0}  # largest |ratio - 1| per action
        bar = tqdm(total=len(trained) * 2 * len(batches), desc=f"grads {mode}", unit="batch", mininterval=5)
        for j in [*trained, "all"]:
            grams = {}
            for control in CONTROLS:
                if j != "all":
                    parts = []
                    for b, w in zip(batches, weights[control]):
                        parts.append(group_grads(tr, b, w, j))
                        bar.update(1)
                    worst[j] = max(worst.get(j, 0.0), *(d for _, d in parts))
                    worst["all"] = max(worst["all"], worst[j])
                    grads = torch.cat([x for x, _ in parts]) / len(trained)  # the trainer: loss_j / len(trained)
                    total[control] = total[control] + grads if control in total else grads
                grams[control] = gram_of(total[control] if j == "all" else grads)
            # real - shuffled on the same bootstrap resamples of the same groups (paired)
            diff = (boot_snr(grams["real"], a.bootstrap, a.seed) - boot_snr(grams["shuffled"], a.bootstrap, a.seed)
                    if a.bootstrap else np.full(1, np.nan))
            sig = ("", "") if j == "all" else (float(t.sigmas[j]), float(t.sigmas_next[j]))
            for control in CONTROLS:
                st = gram_stats(grams[control], G, a.bootstrap, a.seed)
                lo, hi = np.percentile(diff, [2.5, 97.5]) if control == "real" else ("", "")
                rows.append({"mode": mode, "action": j, "sigma": sig[0], "sigma_next": sig[1], "control": control,
                             "groups": m, "G": G, "max_ratio_dev": worst[j], **st, "diff_ci_lo": lo, "diff_ci_hi": hi,
                             **{f"step_snr_n{n}": st["per_group_snr"] * n / G for n in a.samples_per_step}})
        bar.close()
    return rows


def reward_summary(batches: list[Batch], tr: Trainer) -> dict:
    """Final-step mean of every training reward and the share of groups whose final mixed reward is constant."""
    adv = tr.cfg.advantage
    fin = torch.cat([sum(w * b.rewards[k][:, -1] for k, w in adv.rewards.items()) for b in batches])
    flat = fin.reshape(-1, tr.cfg.group_size)
    return {"reward_final_mean": float(fin.mean()), "groups_constant_reward": float((flat.std(1) == 0).float().mean())}


def scorer_dir(a: argparse.Namespace, config: dict, tmp: Path) -> str | None:
    """The toy CLIP scorer folder the ``clip`` reward needs: --scorer, or one trained now (the DAG's stage)."""
    if a.scorer or "clip" not in tasks.get(a.task, config).rewards:
        return a.scorer
    out = tmp / "clip_scorer"
    tasks.commands()["train-scorer"][0](["--cfg", "{}", "--out", str(out), "--threads", str(a.threads)])
    return str(out)


# -- output -------------------------------------------------------------------------------------------

def _num(v: str) -> object:
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def read_rows(path: Path) -> list[dict]:
    """Rows of an earlier CSV, numbers parsed (for --append)."""
    with open(path, newline="") as fh:
        return [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def write_md(rows: list[dict], path: Path) -> None:
    pairs: dict[tuple, dict] = {}
    for r in rows:
        pairs.setdefault((r["task"], r["method"], r["mode"], str(r["action"])), {})[r["control"]] = r
    ns = sorted({int(k[len("step_snr_n"):]) for r in rows for k in r if k.startswith("step_snr_n") and r[k] != ""})
    head = (["task", "method", "mode", "M x G", "action (sigma -> next)", "SNR/group real [95% CI]",
             "SNR/group shuffled [95% CI]", "real - shuffled [paired 95% CI]", "z real", "z shuf.",
             "samples for SNR 1 (real)"] + [f"step SNR n={n}" for n in ns] + ["signal"])
    runs = {r["command"]: r for r in rows}
    lines = ["# Per-action policy-gradient SNR vs a shuffled-advantage control", "",
             "At the initial policy (LoRA at init). z = ||gbar||^2 / (tr Sigma / M) = 1 + M SNR: about 1 for pure "
             "noise. signal: yes when the paired bootstrap CI of real - shuffled lies above 0 (the control's true "
             "SNR is 0). Step SNR = SNR/group x n / G (real advantages).", "",
             *[f"- `{c}` (seed {r['seed']}, wall {r['wall_s']} s)" for c, r in runs.items()], "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ci = lambda x: f"{x['per_group_snr']:.2e} [{x['snr_ci_lo']:.1e}, {x['snr_ci_hi']:.1e}]"  # noqa: E731
    for (task, method, mode, act), p in pairs.items():
        r, s = p["real"], p["shuffled"]
        sig = "all (mean)" if act == "all" else f"{act} ({r['sigma']:.3f} -> {r['sigma_next']:.3f})"
        need = r["samples_for_snr1"]
        d = f"{r['per_group_snr'] - s['per_group_snr']:.2e} [{r['diff_ci_lo']:.1e}, {r['diff_ci_hi']:.1e}]"
        cells = [task, method, mode, f"{r['groups']} x {r['G']}", sig, ci(r), ci(s), d, f"{r['z']:.2f}",
                 f"{s['z']:.2f}", "inf" if need == float("inf") else f"{need:.0f}"]
        cells += [f"{r[f'step_snr_n{n}']:.3f}" if r.get(f"step_snr_n{n}", "") != "" else "" for n in ns]
        lines.append("| " + " | ".join(cells + ["yes" if r["diff_ci_lo"] > 0 else "no"]) + " |")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
        os.chmod(tmp, 0o644)


# -- entry point --------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO_ROOT / "config.yaml"), help="method presets and the base model")
    p.add_argument("--model", default=None, help="base model folder (default: config.yaml's model.pretrained)")
    p.add_argument("--methods", nargs="+", default=["tafs_grpo"], help="presets of config.yaml's methods")
    p.add_argument("--modes", nargs="+", default=["integrated"], choices=MODES, help="advantage modes")
    p.add_argument("--task", default="toy_composition", help="toy_composition (toy_dense) | toy_preference "
                   "(toy_dense + clip: needs the toy scorer; trained here (~minutes) unless --scorer)")
    p.add_argument("--scorer", default=None, help="trained toy CLIP-scorer folder (toy_preference)")
    p.add_argument("--groups", type=int, default=128,
                   help="M independent prompt groups (rounded up to a multiple of --batch-prompts)")
    p.add_argument("--group", type=int, default=8, help="G samples per group")
    p.add_argument("--batch-prompts", type=int, default=8, help="groups drawn per Trainer.iterate() call")
    p.add_argument("--samples-per-step", type=int, nargs="+", default=[32, 64, 128, 256],
                   help="optimiser-step sizes n of the derived step SNR (no extra compute)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over groups")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(BENCH_DIR / "results" / "gradient_snr.csv"))
    p.add_argument("--md", default=None, help="Markdown table (default: --out with .md)")
    p.add_argument("--append", action="store_true",
                   help="keep --out's rows of other (task, method, mode) runs and rewrite both files with all")
    a = p.parse_args(argv)
    if a.groups < 2 or a.group < 2 or a.batch_prompts < 1:
        p.error("--groups and --group must be >= 2, --batch-prompts >= 1")
    return a


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; returns the CSV rows."""
    a = parse_args(argv)
    command = shlex.join(["python", "bench/gradient_snr.py", *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(a.threads)
    config = yaml.safe_load(Path(a.config).read_text())
    model = a.model or config["model"]["pretrained"]
    model = str(model if Path(model).is_absolute() else REPO_ROOT / model)
    a.batch_prompts = min(a.batch_prompts, a.groups)
    n_batches = math.ceil(a.groups / a.batch_prompts)
    t0, rows = time.time(), []
    with tempfile.TemporaryDirectory(prefix="tafs-gsnr-") as tmp:
        scorer = scorer_dir(a, config, Path(tmp))
        for method in a.methods:
            cfg = train_config(config, method, a, scorer)
            tr = Trainer(load_backbone(model, device="cpu"), cfg, Path(tmp) / method, tasks.get(a.task, config)
                         .load_prompts("train"))
            batches = draw_batches(tr, n_batches)
            extra = {"method": method, "task": a.task, "sampler": cfg.method.sampler, "n_adv": cfg.advantage.n_adv,
                     **reward_summary(batches, tr)}
            rows += [{**extra, **r} for r in measure(tr, batches, a)]
            del tr, batches
    wall = time.time() - t0
    for r in rows:
        r.update(seed=a.seed, wall_s=round(wall, 1), command=command)
    out, md = Path(a.out), Path(a.md or Path(a.out).with_suffix(".md"))
    new = {(r["task"], r["method"], r["mode"]) for r in rows}
    old = [r for r in (read_rows(out) if a.append and out.exists() else [])
           if (r["task"], r["method"], r["mode"]) not in new]
    write_csv(out, old + rows)
    write_md(old + rows, md)
    print(md.read_text())
    return rows


if __name__ == "__main__":
    main()
