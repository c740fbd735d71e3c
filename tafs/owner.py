"""Which config a results folder belongs to: ``<results>/.tafs-owner.json``, so that a second config pointed at
the same folder stops before any job instead of mixing its outputs with the first one's (Snakemake alone would
keep the first config's outputs wherever their inputs and parameters happen to match).

The record holds a hash of the sections of the config that define what is produced (``RESULT_SECTIONS``), one
hash per section (so the refusal can say which differ), and where the config came from (``config.yaml``, the
``--configfile`` files, ``--config`` overrides). The sections that only say how or where a run goes
(``OTHER_SECTIONS``: job resources, threads, the tracking server, the download cache, the report switch, the
folder itself) are left out: changing them on the same folder is fine.

The DAG checks the record when it is built (``check``, from workflow/rules/common.smk) and the ``config_snapshot``
rule writes it (never a dry run). ``--config force_results=True`` skips the check, and the run then makes this
config the folder's owner.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from tafs.config import ConfigError, redact
from tafs.hashing import config_hash
from tafs.io import read_json

OWNER = ".tafs-owner.json"
# What is produced: the task and its prompts, the models, every training / evaluation / table setting, the seeds.
RESULT_SECTIONS = ("task", "tasks", "model", "pretrain", "scorer", "train", "methods", "ablations", "reward_models",
                   "baselines", "seeds", "eval", "sweep", "tables", "figure4")
# How and where it runs: no effect on the numbers (tests/test_results_owner.py checks every schema key is in one).
OTHER_SECTIONS = ("results", "threads", "report", "resources", "tracking", "hub", "force_results", "experiment")
# Keys of a result section that only say how the DAG splits its jobs (eval.shard_jobs: the scatter jobs of an
# evaluation): left out of its hash, so a folder takes any split, and folders made before the key existed keep theirs.
HOW_KEYS = {"eval": ("shard_jobs",)}


def section_hashes(config: Mapping[str, Any]) -> dict[str, str]:
    """A short hash of each result-defining section (secrets redacted, as in config.json; HOW_KEYS left out)."""
    return {k: config_hash(redact(_without(config.get(k), HOW_KEYS.get(k, ()))), 16) for k in RESULT_SECTIONS}


def _without(section: Any, keys: Sequence[str]) -> Any:
    return {k: v for k, v in section.items() if k not in keys} if isinstance(section, Mapping) and keys else section


def results_hash(config: Mapping[str, Any]) -> str:
    return config_hash(section_hashes(config), 16)


def sources(configfiles: Sequence[Any], overrides: Mapping[str, Any] | None = None) -> list[str]:
    """Where a config came from, as Snakemake was given it: the embedded default, the ``--configfile`` files
    (relative to the working directory when inside it), the ``--config`` overrides but ``force_results``."""
    files = [os.path.relpath(f) if not os.path.relpath(f).startswith("..") else str(f) for f in configfiles]
    args = [f"--config {k}={v}" for k, v in redact(dict(overrides or {})).items() if k != "force_results"]
    return ["config.yaml", *files, *args]


def record(config: Mapping[str, Any], config_sources: Sequence[str]) -> dict[str, Any]:
    """The owner record this config would write (the time is added when it is written)."""
    return {"hash": results_hash(config), "config_sources": list(config_sources), "sections": section_hashes(config)}


def path(results: str | Path) -> Path:
    return Path(results) / OWNER


def check(config: dict[str, Any], config_sources: Sequence[str]) -> None:
    """Refuse a results folder that another config (different result sections) owns, naming both and the fix.
    Takes ``force_results`` out of ``config``: a one-time override, not part of config.json (which would change
    again on the next run without it, and re-run what reads it)."""
    file = path(config["results"])
    if config.pop("force_results", False) or not file.is_file():
        return
    owner = read_json(file)
    if owner.get("hash") == results_hash(config):
        return
    ours = section_hashes(config)
    theirs = owner.get("sections") or {}
    differ = [k for k in RESULT_SECTIONS if theirs.get(k) != ours[k]]
    raise ConfigError(
        f"results folder {config['results']} holds the results of another config: it was made with "
        f"{' '.join(owner.get('config_sources') or ['?'])} ({owner.get('written', 'unknown time')}), this run has "
        f"{' '.join(config_sources)}, and they differ in {', '.join(differ)}. Give this config its own folder "
        f"(`results: results/<name>` in it, or --config results=results/<name>); or, to let it take this one "
        f"over, delete {config['results']} or re-run with --config force_results=True ({file} records the owner)")


def write(file: str | Path, owner: Mapping[str, Any]) -> None:
    """Write the owner record (from the config_snapshot job)."""
    from tafs.io import write_json

    write_json(file, {**owner, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
