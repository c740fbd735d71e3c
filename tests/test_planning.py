"""tafs.planning: parameter counts from the real configs, the activation model against autograd on the tiny
pipelines, memory warnings, and Table 2's predicted seconds per iteration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tafs.planning import catalogue, model_sizes, timing
from tafs.planning.activations import arch_from_configs, measure_saved_bytes, training_activations
from tafs.planning.memory import train_memory

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, billions", [("sd35_medium_transformer", 2.47), ("flux_dev_transformer", 11.9),
                                            ("t5_xxl_encoder", 4.76), ("sd35_large_transformer", 8.1)])
def test_parameter_counts_from_configs_match_the_known_sizes(name, billions):
    assert model_sizes.parameter_count(name) / 1e9 == pytest.approx(billions, rel=0.02)


def test_every_catalogued_component_has_a_shipped_config_with_its_source():
    names = {c for g in catalogue.GENERATORS.values() for c in (g.transformer, g.vae, *g.text)}
    names |= {c for comps in catalogue.REWARDS.values() for c in comps}
    for name in names:
        spec = model_sizes.shipped(name)
        assert "/" in spec["source"] and spec["class"].split(".")[0] in ("diffusers", "transformers"), name


def test_a_cached_real_config_replaces_the_shipped_one(tmp_path):
    spec = model_sizes.shipped("flux_dev_transformer")
    folder = tmp_path / "black-forest-labs--FLUX.1-dev@abc123" / "transformer"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**spec["config"], "num_single_layers": 0,
                                                    "_class_name": "FluxTransformer2DModel"}))
    comp = model_sizes.component("flux_dev_transformer", tmp_path)
    assert comp.source == str(folder / "config.json") and comp.config["num_single_layers"] == 0
    smaller = model_sizes.parameter_count("flux_dev_transformer", str(tmp_path))
    assert smaller < 0.6 * model_sizes.parameter_count("flux_dev_transformer")  # no single-stream blocks
    assert model_sizes.component("flux_dev_transformer", tmp_path / "none").source.startswith("shipped")


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    import shutil

    import torch
    from diffusers import SD3Transformer2DModel

    from tafs.models.tiny import build_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny")
    out = {f: build_tiny_pipeline(f, root / f) for f in ("sd3", "flux")}
    # SD3.5-M's block features at tiny size: a dual-attention block and RMS qk-norm (3 blocks)
    out["sd35"] = Path(shutil.copytree(out["sd3"], root / "sd35"))
    cfg = {**SD3Transformer2DModel.load_config(out["sd35"] / "transformer"), "dual_attention_layers": [0],
           "qk_norm": "rms_norm", "num_layers": 3}
    torch.manual_seed(0)
    SD3Transformer2DModel.from_config(cfg).save_pretrained(out["sd35"] / "transformer")
    return out


@pytest.mark.parametrize("family", ["sd3", "sd35", "flux"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activation_model_predicts_what_autograd_keeps(tiny_folders, family, checkpointing):
    """At the tiny presets' sizes (32 px, 32 T5 tokens, LoRA r4; SD3 with CFG doubles the batch) the predicted
    saved activations are within 25 % of the bytes autograd keeps (saved_tensors_hooks). Measured on the CPU:
    SD3 +4.0 % / -5.1 % (without / with checkpointing), SD3.5-like +0.8 % / -3.6 %, Flux -0.3 % / -6.7 %."""
    from tafs.models.backbone import LoraSpec
    from tafs.models.loading import load_backbone
    from tafs.models.options import ModelOptions

    folder, batch = tiny_folders[family], 2
    bb = load_backbone(folder, device="cpu", options=ModelOptions(resolution=32, max_sequence_length=32,
                                                                  gradient_checkpointing=checkpointing))
    bb.add_lora(LoraSpec(rank=4, alpha=8, target_modules=bb.lora_targets), seed=0)
    measured = measure_saved_bytes(bb, batch)
    kind = "flux" if family == "flux" else "sd3"
    arch = arch_from_configs(kind, json.loads((folder / "transformer" / "config.json").read_text()),
                             json.loads((folder / "vae" / "config.json").read_text()))
    assert (arch.dual_layers, arch.qk_norm) == ((1, True) if family == "sd35" else (0, family == "flux"))
    est = training_activations(arch, batch * (2 if kind == "sd3" else 1), 32, 32, 4, 4)
    predicted = est.kept_with_checkpointing if checkpointing else est.full_bytes
    assert predicted == pytest.approx(measured, rel=0.25)
    assert est.checkpointed_bytes < est.full_bytes  # checkpointing is what saves memory


def flux_config(**train_over) -> tuple[dict, dict]:
    config = {"model": {"pretrained": {"hub": "black-forest-labs/FLUX.1-dev"}, "resolution": 512, "dtype": "bf16",
                        "text_dtype": "bf16", "vae_dtype": "fp32", "max_sequence_length": 128,
                        "gradient_checkpointing": True},
              "reward_models": {"pickscore": {}, "clip": {}}}
    train = {"prompts_per_iter": 24, "group_size": 48, "minibatches": 2, "micro_batch": 8, "sample_chunk": 48,
             "decode_chunk": 8, "lora": {"rank": 32}, "method": {"sampler": "annealed", "n_annealed": 3},
             "advantage": {"rewards": {"pickscore": 1.0, "clip": 1.0}}, **train_over}
    return config, train


def test_a_paper_training_job_fits_an_80_gb_gpu():
    config, train = flux_config()
    mem = train_memory("train", config, train, 8, None)
    assert 30 < mem.peak_gb < 80 and mem.warning(80) is None
    assert mem.parts[0].gb == pytest.approx(11.9 * 2, rel=0.02)  # Flux in bf16


def test_a_job_over_its_gpu_warns_naming_the_setting_to_change():
    config, train = flux_config(micro_batch=72)
    config["model"]["gradient_checkpointing"] = False
    mem = train_memory("train tafs_grpo", config, train, 8, None)
    warning = mem.warning(80)
    assert warning and "train tafs_grpo" in warning and "train.micro_batch" in warning
    assert "model.gradient_checkpointing" in warning
    config["model"]["gradient_checkpointing"] = True
    assert train_memory("train", config, train, 8, None).peak_gb < mem.peak_gb


def test_forward_flops_formula():
    from tafs.planning.activations import Arch

    arch = Arch("flux", width=3072, heads=24, double_layers=19, single_layers=38, dual_layers=0, qk_norm=True,
                patch=2, vae_factor=8)
    tokens = 1024 + 128  # 512 px: (512 / 8 / 2)^2 image tokens + 128 T5 tokens
    assert timing.forward_flops(arch, 10 ** 10, 512, 128) == 2 * 10 ** 10 * tokens + 4 * tokens ** 2 * 3072 * 57


@pytest.fixture(scope="module")
def flux_estimator():
    from tafs.planning import command as tafs_plan
    from tafs.dag import Plan
    from tafs.planning.estimate import Estimator

    cfg = tafs_plan.load_config([str(REPO / "workflow/presets/paper_flux_pickapic.yaml")], REPO)
    import contextlib

    with contextlib.chdir(REPO):
        return Estimator(cfg, Plan(cfg))


def test_table2_predictions_for_each_method(flux_estimator):
    rows = {r["method"]: r for r in flux_estimator.table2()}
    assert set(rows) == {"tafs_grpo", "flow_grpo", "dance_grpo", "mix_grpo"}
    assert rows["tafs_grpo"]["predicted_s"] == pytest.approx(116, abs=1)  # the calibration point
    assert {m: r["paper_s"] for m, r in rows.items()} == timing.PAPER_SECONDS
    s = {m: r["predicted_s"] for m, r in rows.items()}
    assert s["tafs_grpo"] < s["mix_grpo"] < s["dance_grpo"] and s["tafs_grpo"] < s["flow_grpo"]
    assert 0.2 < flux_estimator.mfu < 0.8  # a plausible achieved utilisation of an H100


def test_training_gpu_hours_scale_with_the_gpu(flux_estimator):
    train = flux_estimator.plan.train_cfg("tafs_grpo", 0)
    h100 = flux_estimator.run_seconds(train, 8, "h100")
    assert flux_estimator.run_seconds(train, 8, "a100") == pytest.approx(h100 * 989.4 / 312, rel=1e-6)
    assert flux_estimator.run_seconds(train, 4, "h100") == pytest.approx(2 * h100)


def test_an_evaluation_job_over_its_gpu_names_what_to_change():
    """HiDream-I1 (17 B + Llama-3.1-8B and three more text encoders, bf16) with every metric's reward model resident
    does not fit 80 GB: the warning says to serve the 7B judge elsewhere or take a bigger GPU."""
    from tafs.planning.memory import eval_memory

    metrics = ["geneval", "pickscore", "clip", "hpsv2", "imagereward", "unifiedreward"]
    bf16 = {"transformer": "bf16", "text": "bf16", "vae": "bf16"}
    mem = eval_memory("eval_baseline_hidream_full", "HiDream-ai/HiDream-I1-Full", bf16, 1024, 128, 5.0, 8, 4, metrics,
                      {"unifiedreward": {"dtype": "bf16"}}, None)
    warning = mem.warning(80)
    assert warning and "reward_models.unifiedreward: url" in warning and "a bigger GPU" in warning
    assert mem.warning(141) is None  # an H200
    small = eval_memory("eval_base", "stabilityai/stable-diffusion-3.5-medium", bf16, 1024, 128, 4.5, 8, 4,
                        ["pickscore"], {}, None)
    assert small.peak_gb < 30 and small.warning(80) is None


def test_a_measured_mfu_replaces_the_calibration(flux_estimator, tmp_path):
    """A recorded CUDA row with an `mfu` (bench/iteration_time.py --backbone sd3-medium --record-plan) is read by
    tafs.planning.measured and replaces the Table 2 calibration: half the utilisation, twice the seconds."""
    from tafs.planning import measured as gpu
    from tafs.planning.estimate import Estimator

    data = tmp_path / "gpu_measurements.json"
    data.write_text(json.dumps({"rows": [{"method": "tafs_grpo", "median_s": 3.2, "device": "cuda:0", "B": 2,
                                          "G": 8, "backbone": "sd3-medium", "mfu": 0.25}]}))
    mfu = gpu.measured_mfu(data)
    assert mfu[0] == 0.25 and "gpu_measurements.json (sd3-medium" in mfu[1]
    assert gpu.measured_mfu(tmp_path / "nowhere.json") is None
    measured = Estimator(flux_estimator.config, flux_estimator.plan, (flux_estimator.mfu / 2, "measured"))
    train = flux_estimator.plan.train_cfg("tafs_grpo", 0)
    assert measured.run_seconds(train, 8, "h100") == pytest.approx(2 * flux_estimator.run_seconds(train, 8, "h100"))


def test_runs_longer_than_the_runtime_limit_are_noted():
    from tafs.planning.estimate import over_runtime

    notes = over_runtime({"tafs_grpo": {"s_per_iteration": 116.0, "wall_h": 48.3},
                          "dance_grpo": {"s_per_iteration": 595.0, "wall_h": 247.9},
                          "short": {"s_per_iteration": 43.0, "wall_h": 18.1}}, 48)
    assert len(notes) == 2 and "dance_grpo" in notes[1] and "6 submissions" in notes[1]
    assert "resources.train.runtime" in notes[0] and not over_runtime({"short": {"wall_h": 18.1}}, 48)


@pytest.mark.parametrize("files", [["paper_sd3_geneval.yaml", "table1_baselines.yaml"],
                                   ["paper_flux_geneval.yaml", "table1_baselines.yaml"], ["paper_flux_pickapic.yaml"]])
def test_every_paper_evaluation_job_fits_its_gpu(files):
    """With the presets' documented settings (HiDream's `offload: model`), no evaluation job's estimated peak exceeds
    resources.eval.gpu_mem_gb; without the offload, HiDream's does and the warning names the two settings."""
    import contextlib

    from tafs.dag import Plan
    from tafs.planning import command as tafs_plan
    from tafs.planning.estimate import Estimator

    cfg = tafs_plan.load_config([str(REPO / "workflow/presets" / f) for f in files], REPO)
    with contextlib.chdir(REPO):
        est = Estimator(cfg, Plan(cfg))
        rules = ["eval_base"] + [g[0] for g in est.plan.eval_run_groups()]
        rules += [f"eval_baseline_{b}" for b in cfg.get("baselines") or {}]
        gpu_gb = est.gpu("eval")[1]
        peaks = {r: est.evaluation(r, 1).memory for r in rules}
        assert all(m is None or m.warning(gpu_gb) is None for m in peaks.values()), {
            r: m.peak_gb for r, m in peaks.items() if m}
        if "hidream_full" in (cfg.get("baselines") or {}):
            assert peaks["eval_baseline_hidream_full"].peak_gb > 40  # the transformer and the rewards are counted
            del cfg["baselines"]["hidream_full"]["offload"]
            warning = Estimator(cfg, Plan(cfg)).evaluation("eval_baseline_hidream_full", 1).memory.warning(gpu_gb)
            assert warning and "offload: model" in warning and "rewards_after_generation" in warning


def test_scatter_jobs_share_an_evaluations_gpu_hours():
    """eval.shard_jobs K: the dry run lists K jobs a model and each is estimated at a K-th of the model's FLOPs, so
    the stage's GPU-hours are those of one job a model; the basis says so."""
    import contextlib

    from tafs.dag import Plan
    from tafs.planning import command as tafs_plan
    from tafs.planning.estimate import Estimator

    cfg = tafs_plan.load_config([str(REPO / "workflow/presets/paper_sd3_geneval.yaml")], REPO)
    with contextlib.chdir(REPO):
        est = Estimator(cfg, Plan(cfg))
        one = est.evaluation("eval_base", 1)
        cfg["eval"]["shard_jobs"] = 4  # the plan reads it when asked (it shapes the DAG only)
        four = est.evaluation("eval_base", 4)
    assert one.gpu_hours and four.gpu_hours == pytest.approx(one.gpu_hours, abs=0.1)
    assert "/ 4 scatter jobs (eval.shard_jobs)" in four.basis and "scatter" not in one.basis, four.basis


def test_plan_reads_its_measurements_from_the_package_not_bench(tmp_path, monkeypatch):
    """What `tafs plan` reads ships in the package (tafs/planning/data/, package data in pyproject.toml): the planner
    names no bench/ path and reads the same from a folder without bench/. The benchmark's --record-plan writes
    there: its CUDA method rows (not the compute-floor rows, not CPU rows), read back as seconds per sample and MFU,
    a re-run replacing the same method's row."""
    import subprocess

    from tafs.planning import command as tafs_plan
    from tafs.planning import measured as gpu

    pkg = Path(gpu.__file__).resolve().parent
    assert gpu.MEASURED.parent == pkg / "data" and gpu.MEASURED.exists()
    shipped = gpu.load()
    assert isinstance(shipped["rows"], list) and "--record-plan" in shipped["about"]
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^"tafs.planning" = \[.*"data/\*\.json"', pyproject, re.MULTILINE)  # installed with the package
    hits = subprocess.run(["grep", "-rn", "bench/results", str(pkg)], capture_output=True, text=True).stdout
    assert not hits, hits
    expected = gpu.measured_seconds(), gpu.measured_mfu()
    monkeypatch.chdir(tmp_path)  # no bench/ here
    assert (gpu.measured_seconds(), gpu.measured_mfu()) == expected
    assert tafs_plan.measured_seconds is gpu.measured_seconds  # what build() calls

    data = tmp_path / "m.json"
    row = {"method": "tafs_grpo", "sampler": "annealed", "median_s": 4.0, "device": "cuda:0", "gpu": "NVIDIA H100",
           "B": 2, "G": 8, "backbone": "sd3-medium", "mfu": 0.3, "ratio_vs_tafs": 1.0, "time_opt_s": 2.0}
    rows = [row, {**row, "method": "tafs_floor_forward", "sampler": ""}, {**row, "device": "cpu", "gpu": ""}]
    assert gpu.record(rows, data) == 1
    assert gpu.measured_seconds(data) == (0.25, "m.json (sd3-medium, NVIDIA H100, B x G 16)")
    assert gpu.measured_mfu(data)[0] == 0.3 and "ratio_vs_tafs" not in gpu.load(data)["rows"][0]
    assert gpu.record([{**row, "median_s": 8.0}], data) == 1 and len(gpu.load(data)["rows"]) == 1
    assert gpu.measured_seconds(data)[0] == 0.5
    assert gpu.record([{**row, "device": "cpu"}], data) == 0
