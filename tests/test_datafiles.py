"""Prompt files pinned by URL and sha256 (tafs.datafiles) and the paper's tasks that use them (tafs.tasks.paper)."""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from data_server import FileServer
from tafs.config import ConfigError
from tafs.datafiles import FetchError, RemoteFile, fetch, parse_remote
from tafs.tasks import registry as tasks
from tafs.tasks.base import SPLITS


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fetch_checks_the_pin_and_writes_atomically(tmp_path):
    (tmp_path / "srv").mkdir()
    data = b"a red ring\na blue square\n"
    (tmp_path / "srv" / "train.txt").write_bytes(data)
    with FileServer(tmp_path / "srv") as srv:
        good = RemoteFile(srv.url("train.txt"), _sha(data))
        dest = good.local_path(tmp_path / "cache")
        assert dest.parent.name == "data" and dest.name.startswith(_sha(data)[:16])
        assert fetch(good, dest).read_bytes() == data
        fetch(good, dest)  # already there with the right sha256: not asked again
        assert srv.requests == ["/train.txt"]
        bad = RemoteFile(srv.url("train.txt"), "0" * 64)
        other = tmp_path / "cache" / "data" / "bad.txt"
        with pytest.raises(FetchError, match="sha256 is .* the config pins 0000"):
            fetch(bad, other)
        assert not other.exists() and not list(other.parent.glob(".bad*"))  # nothing half-written


def test_fetch_without_network_says_how_to_prefetch(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    remote = RemoteFile(f"http://127.0.0.1:{port}/x/test.txt", "a" * 64)
    with pytest.raises(FetchError, match=r"cannot fetch http://127.0.0.1:\d+/x/test.txt .*tafs fetch-data --url"):
        fetch(remote, tmp_path / "t.txt", timeout=5)


@pytest.mark.parametrize("value, match", [
    ({"url": "ftp://x/y.txt", "sha256": "a" * 64}, "http"),
    ({"url": "https://x/y.txt", "sha256": "abc"}, "64 hex"),
    ({"url": "https://x/y.txt"}, "expected a file path or"),
])
def test_bad_pins_name_the_key(value, match):
    with pytest.raises(ConfigError, match=match):
        parse_remote(value, "tasks.mine.prompts.train")


def test_paper_tasks_pin_their_prompt_lists():
    pick = tasks.get("pickapic")
    files = pick.remote_files()
    assert set(files) == set(SPLITS)
    for f in files.values():  # a commit in the URL, a sha256 (docs/real-models.md §2: Flow-GRPO's split)
        assert "/ac4c86e8cae021841f1fde853d340e0db67690dd/dataset/pickscore/" in f.url and len(f.sha256) == 64
    assert [m.domain for m in pick.metrics] == ["in", "in", "out", "out", "out"]
    gen = tasks.get("geneval")
    assert not gen.remote_files() and gen.category_key == "tag" and gen.disjoint_splits
    assert gen.metric("geneval").average == "categories" and gen.rewards["geneval_score"] == 1.0


def test_geneval_metadata_lines_take_their_tag_as_category(tmp_path):
    """GenEval's own metadata files (no `category` key) read with the tag as the category."""
    rows = [{"tag": "counting", "include": [{"class": "cup", "count": 2}], "exclude": [{"class": "cup", "count": 3}],
             "prompt": "a photo of two cups"},
            {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}],
             "prompt": "a photo of a red dog"}]
    f = tmp_path / "evaluation_metadata.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = tasks.get("geneval").load_prompts("test", source=f)
    assert [p.category for p in prompts] == ["counting", "colors"]
    assert prompts[0].metadata["include"] == [{"class": "cup", "count": 2}] and prompts[0].metadata["tag"] == "counting"
    with pytest.raises(ConfigError, match="fetch them first"):
        tasks.get("pickapic").load_prompts("test")


def test_reward_options_are_checked_against_the_factory():
    """A misspelt reward option fails when the DAG is built, naming the key and the options the reward takes."""
    from tafs.rewards import registry

    registry.check_kwargs("pickscore", {"path": "x", "batch_size": 8, "device": "auto"}, "reward_models.pickscore")
    with pytest.raises(ConfigError, match=r"reward_models.geneval: unknown option\(s\) \['detecter'\] of reward "
                                          r"'geneval'; it takes \[.*'detector'"):
        registry.check_kwargs("geneval", {"detecter": "x"}, "reward_models.geneval")


def test_a_run_whose_reward_the_prompts_cannot_feed_fails_when_the_dag_is_built(monkeypatch):
    """The toy reward mixes of config.yaml's ablations on GenEval prompts (no toy spec in their metadata): caught
    before any job, naming the reward and the runs that would train on it."""
    from pathlib import Path

    import yaml

    from tafs.dag import Plan

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg.update(task="geneval", seeds=[0])
    with pytest.raises(ConfigError, match=r"lacks metadata \['objects'\] that the reward 'toy_dense' needs.*runs "
                                          r"that train on it: \['tafs_grpo-reward_combined', "):
        Plan(cfg)
