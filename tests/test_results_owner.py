"""A results folder belongs to the config that made it (tafs.owner): another config on the same folder stops
when the DAG is built, naming both configs and the fix; changes to how a run goes (resources, threads, the
tracking server) do not; a dry run writes nothing; ``--config force_results=True`` hands the folder over."""

from __future__ import annotations

import json

import pytest
import yaml

from dag_utils import REPO, run_snakemake, scratch_workflow
from tafs.config import ConfigError, load_config_file
from tafs.owner import OTHER_SECTIONS, RESULT_SECTIONS, check, record, results_hash, sources


def test_every_config_section_is_classified():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert set(schema["properties"]) == set(RESULT_SECTIONS) | set(OTHER_SECTIONS)
    assert not set(RESULT_SECTIONS) & set(OTHER_SECTIONS)


def test_the_hash_covers_what_is_produced_only(tmp_path):
    cfg = load_config_file(str(REPO / "config.yaml"))
    same = [{"threads": 8}, {"resources": {**cfg["resources"], "train": {"gpu": 8, "mem_mb": 1, "runtime": 9}}},
            {"tracking": {"uri": "http://mlflow:5000"}}, {"hub": {"cache": "/scratch/hub"}}, {"report": False}]
    assert all(results_hash({**cfg, **c}) == results_hash(cfg) for c in same)
    assert results_hash({**cfg, "seeds": [0]}) != results_hash(cfg)
    assert results_hash({**cfg, "eval": {**cfg["eval"], "per_category": 1}}) != results_hash(cfg)

    owned = {**cfg, "results": str(tmp_path)}
    from tafs.owner import write

    write(tmp_path / ".tafs-owner.json", record(owned, sources(["a.yaml"])))
    check({**owned, "threads": 4}, ["config.yaml", "b.yaml"])  # the same results: fine
    with pytest.raises(ConfigError) as e:
        check({**owned, "seeds": [0]}, ["config.yaml", "b.yaml"])
    msg = str(e.value)
    assert "config.yaml a.yaml" in msg and "config.yaml b.yaml" in msg and "differ in seeds" in msg
    assert "force_results=True" in msg and "results: results/<name>" in msg
    forced = {**owned, "seeds": [0], "force_results": True}
    check(forced, ["b.yaml"])
    assert "force_results" not in forced  # a one-time override, not part of config.json


def _snakemake(wf, *args: str):
    return run_snakemake(wf, "--cores", "1", *args, timeout=600)


def test_a_second_config_on_the_same_folder_stops_before_any_job(tmp_path):
    wf = scratch_workflow(tmp_path)
    owner = wf / "res" / ".tafs-owner.json"
    (wf / "a.yaml").write_text(yaml.safe_dump({"results": "res"}))
    (wf / "a_big.yaml").write_text(yaml.safe_dump({"results": "res", "threads": 2, "tracking": {"uri": None}}))
    (wf / "b.yaml").write_text(yaml.safe_dump({"results": "res", "seeds": [0]}))

    dry = _snakemake(wf, "-n", "--configfile", "a.yaml")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert not owner.exists()  # a dry run does not claim the folder
    first = _snakemake(wf, "res/config.json", "--configfile", "a.yaml")
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(owner.read_text())["config_sources"] == ["config.yaml", "a.yaml"]

    other = _snakemake(wf, "-n", "--configfile", "b.yaml")
    assert other.returncode != 0
    assert "config.yaml a.yaml" in other.stderr and "config.yaml b.yaml" in other.stderr, other.stderr[-3000:]
    assert "differ in seeds" in other.stderr and "--config force_results=True" in other.stderr
    assert "Job stats" not in other.stdout + other.stderr  # stopped before planning any job
    again = _snakemake(wf, "-n", "--configfile", "a_big.yaml")  # threads / tracking: the same results
    assert again.returncode == 0, again.stderr[-3000:]

    forced = _snakemake(wf, "res/config.json", "--configfile", "b.yaml", "--config", "force_results=True")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert json.loads(owner.read_text())["config_sources"] == ["config.yaml", "b.yaml"]
    assert "force_results" not in json.loads((wf / "res" / "config.json").read_text())
    assert _snakemake(wf, "-n", "--configfile", "b.yaml").returncode == 0
