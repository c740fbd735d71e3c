"""The iteration-time benchmark (bench/iteration_time.py, bench/sd3_backbone.py), at tiny sizes.

These check the benchmark's plumbing, not its timings: presets from config.yaml, one CSV row per
method plus the compute-floor rows, NFE columns that agree with ``Method.nfe_accounting()``, and the
SD3 path (the code that runs on a GPU) on a tiny random SD3 transformer on the CPU.
"""

from __future__ import annotations

import copy
import csv
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tafs.config import deep_merge, from_dict
from tafs.train.methods import Method
from tafs.train.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["tafs_grpo", "flow_grpo", "dance_grpo", "mix_grpo"]
FLOORS = ["tafs_floor_forward", "tafs_floor_backward", "tafs_compute_floor"]


def _load(name: str, path: Path):
    """bench/ is not a package: load its files by path (once per session)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def bench():
    return _load("tafs_bench_iteration_time", ROOT / "bench" / "iteration_time.py")


@pytest.fixture(scope="module")
def sd3():
    return _load("tafs_bench_sd3_backbone", ROOT / "bench" / "sd3_backbone.py")


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def _read(path: Path) -> dict[str, dict]:
    with open(path, newline="") as fh:
        return {r["method"]: r for r in csv.DictReader(fh)}


def _expected_nfe(config: dict, name: str) -> dict[str, int]:
    merged = deep_merge(copy.deepcopy(config["train"]), config["methods"][name].get("train", {}))
    return Method(from_dict(TrainConfig, merged).method).nfe_accounting()


# -- presets -----------------------------------------------------------------------------------------

def test_presets_come_from_config(bench, config):
    before = copy.deepcopy(config)
    dance = bench.method_train_dict(config, "dance_grpo", prompts=3, group=5, scorer=None)
    assert dance["method"] == {**config["train"]["method"], **config["methods"]["dance_grpo"]["train"]["method"]}
    assert dance["method"]["eta"] == 0.3 and dance["advantage"]["n_adv"] == 1
    assert (dance["prompts_per_iter"], dance["group_size"]) == (3, 5)
    assert dance["advantage"]["rewards"] == {"toy_dense": 1.0}
    assert dance["lora"] == config["train"]["lora"]
    tafs = bench.method_train_dict(config, "tafs_grpo", prompts=2, group=2, scorer="some/scorer")
    assert tafs["advantage"]["rewards"] == {"toy_dense": 1.0, "clip": 1.0}  # the task's training rewards
    assert tafs["reward_kwargs"] == {"clip": {"path": "some/scorer"}}
    assert config == before  # nested dicts were copied, not shared
    with pytest.raises(KeyError, match="not in config.yaml"):
        bench.method_train_dict(config, "no_such_method", 2, 2, None)


# -- the toy benchmark end to end --------------------------------------------------------------------

def test_toy_benchmark_rows(bench, config, tmp_path):
    # a copy of config.yaml with one preset changed: the CSV must follow the file, not a built-in table
    cfg = copy.deepcopy(config)
    cfg["methods"]["dance_grpo"]["train"]["method"]["eta"] = 0.25
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "iteration_time.csv"
    bench.main(["--backbone", "toy", "--config", str(cfg_path), "--prompts", "2", "--group", "2",
                "--repeats", "1", "--warmup", "0", "--threads", "1", "--out", str(out),
                "--profile", "--profile-iters", "1"])
    rows = _read(out)
    assert list(rows) == ["tafs_grpo", *FLOORS, "flow_grpo", "dance_grpo", "mix_grpo"]
    for name in METHODS:
        r = rows[name]
        assert {k: int(r[k]) for k in ("nfe_old", "nfe_theta")} == _expected_nfe(cfg, name)
        for k in ("median_s", "min_s", "time_sample_s", "time_reward_s", "time_opt_s", "time_iter_s"):
            assert float(r[k]) > 0, (name, k)
        assert (r["B"], r["G"], r["repeats"]) == ("2", "2", "1")
    assert (rows["tafs_grpo"]["nfe_old"], rows["tafs_grpo"]["nfe_theta"]) == ("4", "3")
    assert (rows["flow_grpo"]["nfe_old"], rows["flow_grpo"]["nfe_theta"]) == ("10", "6")  # the paper's Flow-GRPO: 10 steps, 6 trained
    assert rows["dance_grpo"]["sampler"] == "dance_sde" and float(rows["dance_grpo"]["eta"]) == 0.25
    assert rows["flow_grpo"]["n_steps"] == "10" and float(rows["flow_grpo"]["eta"]) == 0.7
    assert rows["tafs_grpo"]["n_annealed"] == "3" and rows["tafs_grpo"]["eta"] == ""
    assert rows["mix_grpo"]["window"] == "4"
    floor = [float(rows[f]["median_s"]) for f in FLOORS]
    assert all(t > 0 for t in floor) and floor[2] == pytest.approx(floor[0] + floor[1])
    parts = [float(rows["tafs_grpo"][k]) for k in ("overhead_sampling_s", "overhead_reward_s", "overhead_opt_s",
                                                    "overhead_rest_s")]
    assert sum(parts) == pytest.approx(float(rows["tafs_grpo"]["overhead_total_s"]), abs=1e-6)
    assert float(rows["tafs_grpo"]["ratio_vs_tafs"]) == 1.0
    assert "cumulative" in (tmp_path / "profile_tafs.txt").read_text()


# -- the SD3 path (runs on a GPU by default) at tiny size on the CPU ---------------------------------

def test_sd3_tiny_benchmark(bench, config, tmp_path):
    out = tmp_path / "iteration_time_sd3.csv"
    bench.main(["--backbone", "sd3-tiny", "--methods", "tafs_grpo", "--prompts", "1", "--group", "2",
                "--repeats", "1", "--warmup", "0", "--threads", "1", "--sd3-out", str(out),
                "--out", str(tmp_path / "unused.csv")])
    assert not (tmp_path / "unused.csv").exists()
    rows = _read(out)
    assert list(rows) == ["tafs_grpo", *FLOORS]
    r = rows["tafs_grpo"]
    assert float(r["median_s"]) > 0 and float(r["time_opt_s"]) > 0
    passes = config["train"]["inner_epochs"] * config["train"]["minibatches"] * 3  # K = 3 trained actions
    assert int(r["train_flops_per_pass"]) > 0 and int(r["train_passes"]) == passes
    assert (r["backbone"], r["dtype"], r["latent"]) == ("sd3-tiny", "float32", "16x16x16")
    assert r.get("mfu", "") == "" and r.get("peak_mem_gib", "") == ""  # GPU-only columns


def test_sd3_backbone_interface(sd3):
    spec = sd3.sd3_tiny_config()
    bb = sd3.build_random_sd3(spec, torch.device("cpu"), torch.float32, seed=0)
    a, b = bb.encode(["a red square", "a blue ring"]), bb.encode(["a red square"])
    assert a.hidden.shape == (2, spec.text_tokens, spec.joint_attention_dim)
    assert a.pooled.shape == (2, spec.pooled_projection_dim)
    assert torch.equal(a.hidden[0], b.hidden[0]) and not torch.equal(a.hidden[0], a.hidden[1])
    x = torch.randn(2, *bb.latent_shape)
    with torch.no_grad():
        v = bb.velocity(x, torch.tensor([0.3, 0.9]), a)
    assert v.shape == x.shape and v.dtype == torch.float32
    img = bb.decode(x)
    assert img.shape == (2, 3, spec.image_size, spec.image_size) and 0 <= float(img.min()) <= float(img.max()) <= 1
    from tafs.models.lora import LoraSpec

    bb.add_lora(LoraSpec(rank=2, alpha=2, target_modules=bb.lora_targets))  # what SD3.5-M trains: attn2 frozen
    adapted = [n for n, _ in bb.denoiser().named_parameters() if "lora_A" in n]
    assert any(".attn2." in n for n, _ in bb.denoiser().named_modules())
    assert any(".attn." in n for n in adapted) and not any(".attn2." in n for n in adapted)


def test_sd3_medium_config_matches_release(sd3):
    kw = sd3.sd3_medium_config().transformer_kwargs()
    assert kw["num_layers"] == 24 and kw["num_attention_heads"] * kw["attention_head_dim"] == 1536
    assert kw["caption_projection_dim"] == 1536 and kw["pos_embed_max_size"] == 384
    assert kw["dual_attention_layers"] == tuple(range(13)) and kw["qk_norm"] == "rms_norm"
    assert sd3.sd3_medium_config().text_tokens == 333


def test_peak_flops_table(sd3):
    assert sd3.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert sd3.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert sd3.peak_bf16_flops("NVIDIA H200") == 989e12
    assert sd3.peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert sd3.peak_bf16_flops("NVIDIA GeForce RTX 4090") is None
