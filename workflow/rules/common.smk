# Shared helpers for the rules: paths and config sections passed to the CLI as quoted JSON.
import json
import shlex

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
