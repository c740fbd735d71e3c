"""``tafs plan``'s estimates per stage: peak GPU memory of its jobs and GPU-hours from the FLOP model.

A stage's memory is its largest job's (training: every run of the grid; evaluation: the generator it samples,
the base or a baseline); its GPU-hour estimate sums its jobs (training: iterations x seconds per iteration x GPUs
of each run at each seed; evaluation: images x NFEs swept, a K-th of it per job with ``eval.shard_jobs`` K, whose
dry run lists K jobs a model). The bound (jobs x GPUs x runtime limit) is
``tafs plan``'s and means what the scheduler may charge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tafs.planning import catalogue, timing
from tafs.planning.memory import BYTES, JobMemory, arch_of, cfg_factor, eval_memory, train_memory

DEFAULT_GPU_MEM_GB = 80.0  # resources.<stage>.gpu_mem_gb when unset (an 80 GB H100 / A100)
TABLE2 = ("tafs_grpo", "flow_grpo", "dance_grpo", "mix_grpo")


@dataclass
class StageEstimate:
    rule: str
    memory: JobMemory | None = None
    gpu_mem_gb: float = DEFAULT_GPU_MEM_GB
    gpu_hours: float | None = None
    basis: str = ""
    warnings: list[str] = field(default_factory=list)
    per_job: dict[str, dict[str, float]] = field(default_factory=dict)  # run -> s / iteration, wall hours a job


class Estimator:
    """Answers per rule from the config and its ``tafs.dag.Plan``; ``mfu`` from the Table 2 calibration."""

    def __init__(self, config: dict, plan: Any, mfu: tuple[float, str] | None = None):
        self.config, self.plan = config, plan
        self.cache = str(Path(config.get("hub", {}).get("cache") or "downloads").resolve())
        self.mfu = mfu[0] if mfu else timing.paper_mfu(self.cache)
        self.mfu_source = mfu[1] if mfu else "calibrated to Table 2's 116 s TAFS-GRPO iteration"

    # -- resources ------------------------------------------------------------------------------
    def stage_of(self, rule: str) -> str:
        return "train" if rule == "train" else "eval"

    def gpu(self, stage: str) -> tuple[str | None, float]:
        spec = self.config["resources"][stage]
        return spec.get("gpu_model"), float(spec.get("gpu_mem_gb", DEFAULT_GPU_MEM_GB))

    # -- training -------------------------------------------------------------------------------
    def model(self) -> tuple[catalogue.Generator | None, dict]:
        m = self.config["model"]
        return catalogue.generator(catalogue.hub_repo(m.get("pretrained"))), m

    def run_seconds(self, train: dict, gpus: int, gpu: str | None) -> float | None:
        """Seconds per iteration of a run's training config on ``gpus`` GPUs of type ``gpu``."""
        gen, m = self.model()
        arch = arch_of(gen, self.cache) if gen else None
        if arch is None:
            return None
        flops = timing.iteration_flops(arch, gen, train, int(m.get("resolution") or 1024),
                                       int(m.get("max_sequence_length", 128)), cfg_factor(gen, m.get("guidance_scale")),
                                       bool(m.get("gradient_checkpointing")), self.cache)
        return timing.iteration_seconds(flops.total, gpus, gpu, self.mfu)

    def train(self, gpus: int) -> StageEstimate:
        gpu, mem_gb = self.gpu("train")
        out = StageEstimate("train", gpu_mem_gb=mem_gb)
        hours = 0.0
        for run in self.plan.grid.runs:
            seeds = self.plan.seeds(run)
            cfg = self.plan.train_cfg(run, seeds[0])
            mem = train_memory(f"train {run}", self.config, cfg, gpus, self.cache)
            if mem and (out.memory is None or mem.peak_gb > out.memory.peak_gb):
                out.memory = mem
            s = self.run_seconds(cfg, gpus, gpu)
            if s is None:
                return out
            hours += len(seeds) * cfg["iterations"] * s * gpus / 3600
            out.per_job[run] = {"s_per_iteration": round(s, 1), "wall_h": round(cfg["iterations"] * s / 3600, 1)}
        out.gpu_hours = round(hours, 1)
        out.basis = f"FLOP model ({timing.peak_flops(gpu)[1]}, MFU {self.mfu:.2f} {self.mfu_source})"
        return out

    # -- evaluation -----------------------------------------------------------------------------
    def eval_images(self) -> int | None:
        """Images an evaluation job samples per NFE; None while a remote prompt file is not fetched yet."""
        from tafs.datafiles import RemoteFile
        from tafs.evaluate import select_prompts

        e, split = self.config["eval"], self.config["eval"].get("split", "test")
        file = self.plan.task.prompt_files.get(split)
        source = None
        if isinstance(file, RemoteFile):
            source = file.local_path(self.plan.sources.cache)
            if not Path(source).is_file():
                return None
        try:
            prompts = self.plan.task.load_prompts(split, source)
        except Exception:  # noqa: BLE001 - a file the DAG makes later: no count yet
            return None
        return len(select_prompts(prompts, e.get("per_category"), int(e.get("images_per_prompt", 1))))

    def eval_offload(self, rule: str) -> str | None:
        """A baseline evaluation's ``offload`` (the trained models' evaluation has none)."""
        name = rule.removeprefix("eval_baseline_")
        return self.config["baselines"][name].get("offload") if rule.startswith("eval_baseline_") else None

    def eval_target(self, rule: str) -> tuple[str | None, dict, int, float | None, list[int]]:
        """(hub repo, dtypes, resolution, guidance, NFEs a job sweeps) of an evaluation rule."""
        m, e = self.config["model"], self.config["eval"]
        res = int(e.get("resolution") or m.get("resolution") or 1024)
        if rule.startswith("eval_baseline_"):
            name = rule.removeprefix("eval_baseline_")
            b = self.config["baselines"][name]
            entry = b["model"] if not b["model"].get("base") else m.get("pretrained")
            dt = b.get("dtype", "fp32")
            return (catalogue.hub_repo(entry), {"transformer": dt, "text": dt, "vae": dt},
                    int(b.get("resolution") or res), b.get("guidance_scale"), list(b["nfe"]))
        dtypes = {"transformer": m.get("dtype", "fp32"), "text": m.get("text_dtype", "fp32"),
                  "vae": m.get("vae_dtype", "fp32")}
        nfes = list(self.config["sweep"]["base_nfe"])
        for name, _samplers, group_nfes, _runs in self.plan.eval_run_groups():
            if name == rule:
                nfes = list(group_nfes)
        return catalogue.hub_repo(m.get("pretrained")), dtypes, res, m.get("guidance_scale"), nfes

    def evaluation(self, rule: str, jobs: int) -> StageEstimate:
        gpu, mem_gb = self.gpu("eval")
        out = StageEstimate(rule, gpu_mem_gb=mem_gb)
        repo, dtypes, res, guidance, nfes = self.eval_target(rule)
        e, seq = self.config["eval"], int(self.config["model"].get("max_sequence_length", 128))
        out.memory = eval_memory(rule, repo, dtypes, res, seq, guidance, int(e.get("batch_size", 128)),
                                 int(e.get("decode_chunk", 0)), self.plan.eval_reward_names(),
                                 self.config.get("reward_models") or {}, self.cache,
                                 bool(e.get("rewards_after_generation")), self.eval_offload(rule))
        gen, images = catalogue.generator(repo), self.eval_images()
        arch = arch_of(gen, self.cache) if gen else None
        if arch is None or images is None:
            out.basis = "unmeasured (" + ("test prompts not fetched yet" if arch else "no FLOP model for it") + ")"
            return out
        params = timing.parameter_count(gen.transformer, self.cache) - timing._buffers(gen.transformer, self.cache)
        f = cfg_factor(gen, guidance) * timing.forward_flops(arch, params, res, seq)
        score = timing.decode_flops(gen.vae, res, self.cache) + timing.reward_flops(self.plan.eval_reward_names(),
                                                                                    self.cache)
        k = self.plan.eval_shard_jobs()  # K scatter jobs a model (eval.shard_jobs), each 1/K of its shards
        job_h = timing.iteration_seconds(images * (sum(nfes) * f + len(nfes) * score) / k, 1, gpu, self.mfu) / 3600
        out.gpu_hours = round(jobs * job_h, 1)
        share = f" / {k} scatter jobs (eval.shard_jobs)" if k > 1 else ""
        out.basis = f"FLOP model, {images} images x NFE {nfes} a model{share}: ~{job_h:.2g} h a job (training's MFU)"
        return out

    # -- Table 2 --------------------------------------------------------------------------------
    def table2(self) -> list[dict[str, Any]]:
        """Predicted seconds per iteration of Table 2's methods (this config's step counts and batch) on the
        paper's 8 x H100, beside the paper's numbers."""
        from tafs.grid import method_spec

        rows = []
        for name in TABLE2:
            if name not in self.config["methods"]:
                continue
            train = method_spec(self.config, name, f"methods.{name}", self.plan.task).train
            s = self.run_seconds(train, timing.PAPER_REFERENCE["gpus"], timing.PAPER_REFERENCE["gpu"])
            counts = timing.nfe(train.get("method") or {})
            rows.append({"method": name, "nfe_old": counts["nfe_old"], "nfe_theta": counts["nfe_theta"],
                         "predicted_s": None if s is None else round(s), "paper_s": timing.PAPER_SECONDS[name]})
        return rows


def estimate(config: dict, stages: list[dict[str, Any]], root: Path,
             mfu: tuple[float, str] | None = None) -> dict[str, Any]:
    """Per GPU stage: memory and GPU-hour estimates with their basis; Table 2's predictions; warnings."""
    import contextlib

    from tafs.dag import Plan

    with contextlib.chdir(root):
        est = Estimator(config, Plan(config), mfu)
        out: dict[str, Any] = {"stages": {}, "warnings": [], "runtime_notes": [], "mfu": round(est.mfu, 3), "mfu_source": est.mfu_source}
        for s in stages:
            if not s["gpus"]:
                continue
            row = est.train(s["gpus"]) if s["rule"] == "train" else est.evaluation(s["rule"], s["jobs"])
            warning = row.memory.warning(row.gpu_mem_gb) if row.memory else None
            out["warnings"] += [warning] if warning else []
            out["runtime_notes"] += over_runtime(row.per_job, s["runtime_h"])
            out["stages"][s["rule"]] = {
                "gpu_hours": row.gpu_hours, "basis": row.basis, "gpu_mem_gb": row.gpu_mem_gb,
                "peak_gb": row.memory.peak_gb if row.memory else None, "job": row.memory.job if row.memory else None,
                "parts": [[p.what, round(p.gb, 2)] for p in row.memory.parts] if row.memory else [],
                "phases": row.memory.notes if row.memory else [], "per_job": row.per_job}
        out["table2"] = est.table2()
    return out


def over_runtime(per_job: dict[str, dict[str, float]], runtime_h: float) -> list[str]:
    """Training runs whose estimated wall time exceeds the runtime limit: they stop at the limit and continue
    from their last checkpoint each time the workflow is run again (docs/cluster.md)."""
    return [f"train {run}: ~{j['wall_h']} h estimated > the {runtime_h:g} h runtime limit "
            f"(resources.train.runtime): {-(-j['wall_h'] // runtime_h):.0f} submissions, resuming from checkpoints"
            for run, j in per_job.items() if runtime_h and j["wall_h"] > runtime_h]


__all__ = ["BYTES", "Estimator", "estimate"]
