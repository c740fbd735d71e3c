# Shared helpers for the rules: paths and config sections passed to the CLI as quoted JSON.
import json
import shlex
from pathlib import Path

from tafs.config import deep_merge

R = config["results"]


def cfg_json(section):
    """A config section as one shell-quoted JSON argument for `python -m tafs ... --cfg`."""
    return shlex.quote(json.dumps(config[section], sort_keys=True))


def base_model_dir():
    """A user-supplied pretrained folder, or the toy base the DAG pretrains."""
    return config["model"]["pretrained"] or f"{R}/models/base"


def base_evals():
    sweep = config["sweep"]
    return expand(f"{R}/eval/base/{{sampler}}/nfe{{nfe}}/metrics.json",
                  sampler=sweep["base_samplers"], nfe=sweep["base_nfe"])


def train_cfg_json(method, seed):
    """The `train` section deep-merged with the method's overrides, at this seed."""
    cfg = deep_merge(config["train"], config["methods"][method].get("train", {}))
    cfg["seed"] = seed
    return shlex.quote(json.dumps(cfg, sort_keys=True))


def run_evals():
    sweep = config["sweep"]
    return [f"{R}/eval/runs/{m}/seed{s}/{config['methods'][m]['eval_sampler']}/nfe{n}/metrics.json"
            for m in config["methods"] for s in config["seeds"] for n in sweep["run_nfe"]]
