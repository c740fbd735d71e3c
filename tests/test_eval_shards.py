"""Resumable evaluation (prompt shards on disk), reward models one at a time, and baseline CPU offload."""

from __future__ import annotations

import json
import weakref
from dataclasses import replace

import pytest
import torch
from conftest import toy_prompts

from tafs.evaluate import EvalConfig, generate, sweep_with
from tafs.rewards import registry
from tafs.rewards.base import RewardSpec, check_batch

BRIGHT, RED = "test_shard_bright", "test_shard_red"
ALIVE: weakref.WeakSet = weakref.WeakSet()
PEAK = [0]


class _Tracked:
    """A reward object whose live instances are counted (the stand-in for a GPU-resident reward model)."""

    def __init__(self, channel: int | None) -> None:
        self.channel = channel
        ALIVE.add(self)
        PEAK[0] = max(PEAK[0], len(ALIVE))

    def __call__(self, prompts, metadata, images):
        check_batch(prompts, metadata, images)
        x = images.float() if self.channel is None else images[:, self.channel].float()
        return x.flatten(1).mean(1)


@pytest.fixture(scope="module", autouse=True)
def registered():
    registry.register(RewardSpec(BRIGHT, lambda: _Tracked(None), "Bright", "test"))
    registry.register(RewardSpec(RED, lambda: _Tracked(0), "Red", "test"))
    yield
    registry.unregister(BRIGHT)
    registry.unregister(RED)


def _cfg(**kw) -> EvalConfig:
    base = {"per_category": 3, "batch_size": 3, "shard_size": 6, "seed": 5,
            "metrics": {"bright": BRIGHT, "red": RED, "also_bright": BRIGHT, "dense": "toy_dense"}}
    return EvalConfig(**{**base, **kw})


class _Spy:
    """The backbone's sampler, recording each span it generates and failing (a killed job) after ``fail_after``."""

    def __init__(self, backbone, fail_after: int | None = None) -> None:
        self.backbone, self.fail_after, self.spans = backbone, fail_after, []

    def __call__(self, texts, cfg, progress, span):
        if self.fail_after is not None and len(self.spans) >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.spans.append((span.start, span.stop))
        return generate(self.backbone, texts, cfg, progress, span)


def _metrics(path) -> dict:
    m = json.loads(path.read_text())
    m.pop("wall_s")
    return m


@pytest.fixture(scope="module")
def backbone(tiny_model_dir):
    from tafs.models.loading import load_backbone

    return load_backbone(tiny_model_dir, device="cpu")


def test_killed_run_resumes_with_identical_metrics_generating_only_missing_shards(backbone, tmp_path):
    prompts, cfg = toy_prompts("test"), _cfg()  # 18 images: 3 shards of 6
    once = _Spy(backbone)
    sweep_with(once, prompts, cfg, [2], "tiny", tmp_path / "once", progress=False)
    assert once.spans == [(0, 6), (6, 12), (12, 18)]

    killed = _Spy(backbone, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        sweep_with(killed, prompts, cfg, [2], "tiny", tmp_path / "resumed", progress=False)
    assert not (tmp_path / "resumed" / "nfe2" / "metrics.json").exists()
    assert sorted(p.name for p in (tmp_path / "resumed" / "nfe2" / "shards").glob("*.json")) == \
        ["shard0.json", "shard1.json"]
    resumed = _Spy(backbone)
    sweep_with(resumed, prompts, cfg, [2], "tiny", tmp_path / "resumed", progress=False)
    assert resumed.spans == [(12, 18)]  # only the shard the kill lost
    again = _Spy(backbone)
    sweep_with(again, prompts, cfg, [2], "tiny", tmp_path / "resumed", progress=False)
    assert again.spans == []  # every shard on disk: nothing sampled
    assert _metrics(tmp_path / "once" / "nfe2" / "metrics.json") == \
        _metrics(tmp_path / "resumed" / "nfe2" / "metrics.json")
    assert (tmp_path / "resumed" / "nfe2" / "samples.png").read_bytes() == \
        (tmp_path / "once" / "nfe2" / "samples.png").read_bytes()


def test_sharded_equals_unsharded_and_other_configs_never_reuse_shards(backbone, tmp_path):
    """Shards that are whole batches reproduce a single-shard run exactly; a shard written under another seed
    (or model name) is recomputed, never gathered."""
    prompts = toy_prompts("test")
    sweep_with(_Spy(backbone), prompts, _cfg(), [2], "tiny", tmp_path / "a", progress=False)
    sweep_with(_Spy(backbone), prompts, _cfg(shard_size=1000), [2], "tiny", tmp_path / "b", progress=False)
    a, b = _metrics(tmp_path / "a" / "nfe2" / "metrics.json"), _metrics(tmp_path / "b" / "nfe2" / "metrics.json")
    a["config"].pop("shard_size"), b["config"].pop("shard_size")
    assert a == b

    other = _Spy(backbone)
    sweep_with(other, prompts, _cfg(seed=6), [2], "tiny", tmp_path / "a", progress=False)
    assert len(other.spans) == 3
    renamed = _Spy(backbone)
    sweep_with(renamed, prompts, _cfg(seed=6), [2], "other", tmp_path / "a", progress=False)
    assert len(renamed.spans) == 3
    seed6 = _metrics(tmp_path / "a" / "nfe2" / "metrics.json")
    assert seed6["metrics"]["bright"]["mean"] != a["metrics"]["bright"]["mean"]


def test_rewards_after_generation_keeps_one_reward_alive_with_identical_numbers(backbone, tmp_path):
    prompts = toy_prompts("test")
    PEAK[0] = 0
    ALIVE.clear()
    sweep_with(_Spy(backbone), prompts, _cfg(), [2], "tiny", tmp_path / "resident", progress=False)
    assert PEAK[0] == 2  # today's path: both reward objects resident at once
    PEAK[0] = 0
    ALIVE.clear()
    sweep_with(_Spy(backbone), prompts, _cfg(rewards_after_generation=True), [2], "tiny", tmp_path / "lazy",
               progress=False)
    assert PEAK[0] == 1 and len(ALIVE) == 0
    resident = _metrics(tmp_path / "resident" / "nfe2" / "metrics.json")
    lazy = _metrics(tmp_path / "lazy" / "nfe2" / "metrics.json")
    assert lazy["config"].pop("rewards_after_generation") and not resident["config"].pop("rewards_after_generation")
    assert lazy == resident


def test_runtime_options_do_not_change_the_shard_key():
    from tafs.eval_shards import identity_of

    base = EvalConfig(metrics={"a": "b"})
    assert identity_of("m", {}, base) == identity_of("m", {}, replace(base, rewards_after_generation=True))
    assert identity_of("m", {}, base) != identity_of("m", {}, replace(base, nfe=3))


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    from tafs.models.tiny import build_tiny_pipeline

    return build_tiny_pipeline("sd3", tmp_path_factory.mktemp("sd3") / "pipe")


@pytest.mark.parametrize("offload, method", [("model", "enable_model_cpu_offload"),
                                             ("sequential", "enable_sequential_cpu_offload")])
def test_baseline_offload_calls_diffusers_and_keeps_the_images(tiny_sd3, offload, method, monkeypatch):
    """Really offloaded (diffusers' accelerate hooks, here onto the CPU as the execution device): the method the
    option names is called, the other one is not; model offload's images equal the plain pipeline's (sequential
    offload's hooks cannot run with the CPU as execution device: accelerate fails moving its meta tensors)."""
    from diffusers import DiffusionPipeline

    from tafs.evaluate_pipeline import BaselineConfig, load_pipeline, pipeline_images

    calls: list[str] = []
    for name in ("enable_model_cpu_offload", "enable_sequential_cpu_offload"):
        real = getattr(DiffusionPipeline, name)
        monkeypatch.setattr(DiffusionPipeline, name,
                            lambda self, *a, _n=name, _r=real, **k: (calls.append(_n), _r(self, *a, **k))[1])
    cfg, base = EvalConfig(nfe=2, batch_size=2, seed=3), BaselineConfig(resolution=32)
    plain = pipeline_images(load_pipeline(tiny_sd3, base, device="cpu"), ["a red ring", "a cube"], cfg, base, False)
    assert calls == []
    pipe = load_pipeline(tiny_sd3, replace(base, offload=offload), device="cpu")
    assert calls == [method] and hasattr(pipe.transformer, "_hf_hook")
    if offload == "model":
        assert torch.equal(plain, pipeline_images(pipe, ["a red ring", "a cube"], cfg, base, False))


def test_baseline_offload_is_validated():
    from tafs.evaluate_pipeline import BaselineConfig

    with pytest.raises(ValueError, match="offload"):
        BaselineConfig(offload="disk")


def test_dag_passes_the_memory_options_to_the_jobs(tmp_path):
    """`baselines.<name>.offload` reaches that baseline's --baseline JSON, the eval options every --cfg."""
    import yaml
    from dag_utils import REPO, run_snakemake, scratch_workflow

    wf = scratch_workflow(tmp_path)
    presets = ["workflow/presets/sd3_cluster.yaml", "workflow/presets/table1_baselines.yaml"]
    name = next(iter(yaml.safe_load((REPO / presets[1]).read_text())["baselines"]))
    extra = {"baselines": {name: {"offload": "sequential"}},
             "eval": {"rewards_after_generation": True, "shard_size": 64}}
    (wf / "memory.yaml").write_text(yaml.safe_dump(extra))  # after the presets under the one --configfile
    res = run_snakemake(wf, "-n", "-p", "--cores", "all", "--configfile", *presets, "memory.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (shell,) = [line for line in res.stdout.splitlines() if "evaluate-pipeline" in line and f"--name {name} " in line]
    assert '"offload": "sequential"' in shell and '"rewards_after_generation": true' in shell
    assert '"shard_size": 64' in shell


def test_scatter_jobs_then_gather_write_what_one_job_writes(backbone, tmp_path, monkeypatch):
    """eval.shard_jobs = 2: each scatter job samples only its shards (round robin over every point's shards) and
    writes no metrics.json; the gather, which builds no reward (and loads no model), then writes the metrics.json
    and samples.png of one job, exactly. A shard that is missing fails the gather, naming its file."""
    from dataclasses import asdict

    from tafs.config import ConfigError
    from tafs.eval_jobs import gather, read_info, write_done
    from tafs.eval_shards import ShardJob
    from tafs.prompts import write_prompt_file

    prompts, cfg, nfes, info = toy_prompts("test"), _cfg(), [2, 3], {"model_commit": "abc"}  # 3 shards of 6 an NFE
    sweep_with(_Spy(backbone), prompts, cfg, nfes, "tiny", tmp_path / "one" / "ode", progress=False, info=info)
    spans, done = [], [tmp_path / f"job{j}of2.json" for j in range(2)]
    for j in range(2):
        job, spy = ShardJob.parse(f"{j}/2", ["ode"], nfes), _Spy(backbone)
        write_done(done[j], job, sweep_with(spy, prompts, cfg, nfes, "tiny", tmp_path / "two" / "ode", progress=False,
                                            info=info, job=job), info)
        spans.append(spy.spans)
    assert spans == [[(0, 6), (12, 18), (6, 12)], [(6, 12), (0, 6), (12, 18)]]  # units 0-5 of (NFE, shard), by parity
    assert not list((tmp_path / "two").rglob("metrics.json"))

    monkeypatch.setattr(registry, "build", lambda *a, **k: pytest.fail("the gather built a reward"))
    write_prompt_file(tmp_path / "test.jsonl", prompts)
    gather(str(tmp_path / "test.jsonl"), asdict(cfg), ["ode"], nfes, "tiny", tmp_path / "two", read_info(done))
    for n in nfes:
        one, two = tmp_path / "one" / "ode" / f"nfe{n}", tmp_path / "two" / "ode" / f"nfe{n}"
        assert _metrics(two / "metrics.json") == _metrics(one / "metrics.json")
        assert (two / "samples.png").read_bytes() == (one / "samples.png").read_bytes()
    (tmp_path / "two" / "ode" / "nfe3" / "shards" / "shard1.json").unlink()
    with pytest.raises(ConfigError, match=r"nfe3/shards/shard1.json: shard 1 \(images 6-11\) is missing"):
        gather(str(tmp_path / "test.jsonl"), asdict(cfg), ["ode"], nfes, "tiny", tmp_path / "two", read_info(done))
