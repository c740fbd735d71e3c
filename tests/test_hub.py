"""Downloads through huggingface_hub's real client against a hub-compatible server on 127.0.0.1 (``HF_ENDPOINT``):
no network, offline mode, a gated repo and a wrong id end in a message that names the repository and revision
and says what to do. (The download rule in the DAG: tests/test_paper_task_dags.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hub_server import FakeHub
from tafs.config import ConfigError
from tafs.hub import HubModel, parse_model
from tafs.hub_fetch import model_commit
from tafs.models.tiny import build_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    return build_tiny_pipeline("sd3", tmp_path_factory.mktemp("hubsrc") / "sd3")


def _download(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tafs", "download", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", **env}, timeout=300)


def test_parse_model():
    assert parse_model("assets/toy-base", "model.pretrained") == "assets/toy-base"
    m = parse_model({"hub": "acme/x", "revision": "v1", "allow_patterns": "*.json"}, "k")
    assert m == HubModel("acme/x", "v1", ("*.json",)) and m.name == "acme--x@v1"
    for bad, needle in (({"hub": "not a repo!"}, "k.hub"), ({"hub": "a/b", "rev": 1}, "unknown key(s) ['rev']"),
                        (3, "expected a local folder")):
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            parse_model(bad, "k")


def _sources(base: dict, **baselines: dict):
    from tafs.paths import Layout
    from tafs.sources import Sources

    config = {"model": {"pretrained": base}, "baselines": {n: {"model": m} for n, m in baselines.items()}}
    return Sources(config, Layout("results"))


def test_one_revision_per_repository():
    """The same repository at two revisions is an error naming both keys and revisions; at the same one, one
    download (and then its file patterns must agree: one folder cannot hold two selections)."""
    flux = {"hub": "acme/flux", "revision": "main", "allow_patterns": ["*.json"]}
    with pytest.raises(ConfigError) as e:
        _sources(flux, dev={**flux, "revision": "0a1b2c"})
    assert "model.pretrained.revision = 'main'" in str(e.value)
    assert "baselines.dev.model.revision = '0a1b2c'" in str(e.value)
    assert _sources(flux, dev=dict(flux), dev2=dict(flux)).downloads() == {
        "acme--flux@main": HubModel("acme/flux", "main", ("*.json",))}
    with pytest.raises(ConfigError, match=r"model.pretrained and baselines.dev.model ask for different files"):
        _sources(flux, dev={**flux, "allow_patterns": ["*"]})
    assert len(_sources(flux, other={"hub": "acme/other", "revision": "v2"}).downloads()) == 2


def test_download_and_the_error_messages(tiny_sd3, tmp_path):
    with FakeHub({"acme/tiny-sd3": tiny_sd3, "acme/gated-sd3": tiny_sd3}, gated={"acme/gated-sd3"}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
        ok = _download(env, "--hub", "acme/tiny-sd3", "--out", str(tmp_path / "sd3"))
        assert ok.returncode == 0, ok.stderr
        files = sorted(p.relative_to(tiny_sd3).as_posix() for p in tiny_sd3.rglob("*") if p.is_file())
        assert all((tmp_path / "sd3" / f).read_bytes() == (tiny_sd3 / f).read_bytes() for f in files)
        part = _download(env, "--hub", "acme/tiny-sd3", "--allow", "model_index.json", "--allow", "transformer/*",
                         "--out", str(tmp_path / "part"))  # repeated flags add up (what the download rule passes)
        assert part.returncode == 0 and (tmp_path / "part" / "transformer" / "config.json").is_file()
        assert (tmp_path / "part" / "model_index.json").is_file()
        assert not (tmp_path / "part" / "vae").exists()

        gated = _download(env, "--hub", "acme/gated-sd3", "--out", str(tmp_path / "g"))
        assert gated.returncode == 1 and "gated repository" in gated.stderr and "HF_TOKEN" in gated.stderr
        assert f"{hub.url}/acme/gated-sd3" in gated.stderr  # the licence page
        wrong = _download(env, "--hub", "acme/no-such-model", "--revision", "v2", "--out", str(tmp_path / "w"))
        assert wrong.returncode == 1 and "acme/no-such-model (revision v2)" in wrong.stderr
        assert not (tmp_path / "g").exists() and not (tmp_path / "w").exists()  # nothing half-written

    down = _download({"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")},
                     "--hub", "acme/tiny-sd3", "--revision", "abc", "--out", str(tmp_path / "x"))
    assert down.returncode == 1 and "cannot download acme/tiny-sd3 (revision abc): no connection" in down.stderr
    assert "python -m tafs download --hub acme/tiny-sd3 --revision abc --out" in down.stderr  # how to pre-fetch
    off = _download({"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}, "--hub", "acme/x", "--out",
                    str(tmp_path / "y"))
    assert off.returncode == 1 and "HF_HUB_OFFLINE is set" in off.stderr


def test_an_interrupted_download_resumes_and_records_the_commit(tiny_sd3, tmp_path):
    """The connection drops partway through a large file: the first attempt fails saying so and keeps what it
    fetched; the second asks only for the rest of that file (a Range request) and records the commit served."""
    import shutil

    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE as CHUNK  # what http_get writes at a time

    repo = tmp_path / "repo"
    shutil.copytree(tiny_sd3, repo)
    (repo / "transformer" / "weights.bin").write_bytes(os.urandom(CHUNK + CHUNK // 2))
    sizes = {p.relative_to(repo).as_posix(): p.stat().st_size for p in repo.rglob("*") if p.is_file()}
    out = tmp_path / "downloads" / "acme--tiny-sd3@main"
    with FakeHub({"acme/tiny-sd3": repo}) as hub:
        hub.sha = "feedc0de" * 5
        hub.cuts["transformer/weights.bin"] = CHUNK + CHUNK // 4
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
        first = _download(env, "--hub", "acme/tiny-sd3", "--out", str(out))
        assert first.returncode == 1
        assert "download of acme/tiny-sd3 (revision main) interrupted" in first.stderr, first.stderr
        assert "re-run to resume" in first.stderr and not out.exists()  # no half-made folder
        assert (tmp_path / "downloads" / ".acme--tiny-sd3@main.partial").is_dir()
        (tmp_path / "downloads" / ".acme--tiny-sd3@main.partial" / "stray.bin").write_bytes(b"x")  # not in the repo
        seen = len(hub.ranges)
        hub.cuts.clear()
        second = _download(env, "--hub", "acme/tiny-sd3", "--out", str(out))
        assert second.returncode == 0, second.stderr
        resumed = [r for f, r in hub.ranges[seen:] if f == "acme/tiny-sd3/transformer/weights.bin"]
        assert resumed == [f"bytes={CHUNK}-"]  # the rest of the file, not all of it
        whole = [f for f, r in hub.ranges if r is None]  # every file asked for in full exactly once, over both
        assert sorted(whole) == sorted(f"acme/tiny-sd3/{f}" for f in sizes)
        seen = len(hub.ranges)
        assert _download(env, "--hub", "acme/tiny-sd3", "--out", str(out)).returncode == 0
        assert len(hub.ranges) == seen  # the same commit already there: no file fetched again
    assert not (out / "stray.bin").exists()
    assert all((out / f).read_bytes() == (repo / f).read_bytes() for f in sizes)
    record = json.loads((out / ".tafs-download.json").read_text())
    assert record["commit"] == hub.sha and model_commit(out) == hub.sha
    assert record["repo"] == "acme/tiny-sd3" and record["revision"] == "main" and record["files"] == dict(sorted(
        sizes.items()))
    assert hub.sha in second.stdout
    assert not (out / ".cache").exists() and not (tmp_path / "downloads" / ".acme--tiny-sd3@main.partial").exists()


def test_the_download_rule_resumes_after_a_failed_job(tiny_sd3, tmp_path, monkeypatch):
    """Through Snakemake: the failed job's log says the download was interrupted; what it fetched survives
    Snakemake's clean-up of the failed output, and the re-run resumes it."""
    import shutil

    import yaml
    from dag_utils import run_snakemake, scratch_workflow
    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE as CHUNK

    repo = tmp_path / "repo"
    shutil.copytree(tiny_sd3, repo)
    (repo / "transformer" / "weights.bin").write_bytes(os.urandom(CHUNK + 100))
    (tmp_path / "wf").mkdir()
    wf = scratch_workflow(tmp_path / "wf")
    (wf / "hub.yaml").write_text(yaml.safe_dump({"results": "res", "hub": {"cache": "dl"},
                                                 "model": {"pretrained": {"hub": "acme/tiny-sd3"}}}))
    target = "dl/acme--tiny-sd3@main"
    with FakeHub({"acme/tiny-sd3": repo}) as hub:
        hub.cuts["transformer/weights.bin"] = CHUNK + 50
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        first = run_snakemake(wf, "--cores", "1", target, "--configfile", "hub.yaml", timeout=600)
        assert first.returncode != 0 and "re-run to resume" in first.stderr, first.stderr[-3000:]
        hub.cuts.clear()
        seen = len(hub.ranges)
        second = run_snakemake(wf, "--cores", "1", target, "--configfile", "hub.yaml", timeout=600)
        assert second.returncode == 0, second.stderr[-3000:]
        weights = [r for f, r in hub.ranges[seen:] if f == "acme/tiny-sd3/transformer/weights.bin"]
        assert weights == [f"bytes={CHUNK}-"]
    assert model_commit(wf / target) == hub.sha
    weights = "transformer/weights.bin"
    assert (wf / target / weights).read_bytes() == (repo / weights).read_bytes()


def test_the_commit_reaches_mlflow_params(tmp_path):
    """Training and evaluation jobs record the base model's commit (``model_commit``); the MLflow stages log it."""
    from tafs.cli import _model_info
    from tafs.io import write_json
    from tafs.tracking.stages import eval_stage, train_stage

    sha = "feedc0de" * 5
    model = tmp_path / "dl" / "acme--x@main"
    write_json(model / ".tafs-download.json", {"repo": "acme/x", "revision": "main", "commit": sha, "files": {}})
    assert _model_info(str(model)) == {"model_commit": sha} and _model_info(str(tmp_path)) == {}
    write_json(tmp_path / "ev" / "metrics.json", {"model": "base", **_model_info(str(model)), "sampler": "ode",
                                                  "nfe": 8, "n": 1, "metrics": {}, "wall_s": 1.0, "config": {}})
    assert eval_stage("k", "eval_base", tmp_path / "ev", {}).build(tmp_path).params["model_commit"] == sha
    write_json(tmp_path / "run" / "train_summary.json", {"base_model": str(model), **_model_info(str(model)),
                                                         "iterations": 1, "wall_s": 1.0, "config": {}})
    assert train_stage("r", 0, tmp_path / "run").build(tmp_path).params["model_commit"] == sha
