"""Downloads through huggingface_hub's real client against a hub-compatible server on 127.0.0.1 (``HF_ENDPOINT``):
no network, offline mode, a gated repo and a wrong id end in a message that names the repository and revision
and says what to do. (The download rule in the DAG: tests/test_paper_task_dags.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hub_server import FakeHub
from tafs.config import ConfigError
from tafs.hub import HubModel, parse_model
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
    assert "hf download acme/tiny-sd3 --revision abc --local-dir" in down.stderr  # how to pre-fetch
    off = _download({"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}, "--hub", "acme/x", "--out",
                    str(tmp_path / "y"))
    assert off.returncode == 1 and "HF_HUB_OFFLINE is set" in off.stderr
