# TAFS-GRPO reproduction DAG. Logic lives in the `tafs` package; every rule is a thin CLI call.
#   snakemake --cores all                                   # the embedded toy world (CPU)
#   snakemake --cores all --configfile workflow/presets/smoke.yaml   # the same DAG in a few minutes
#   snakemake --report results/report.html                  # tables, Figure 4, sample grids (also on success)
import os
import sys

from snakemake.utils import min_version, validate

min_version("8.20")


# The embedded default, read by tafs (errors name the file and line); --configfile / --config values win over it,
# as with Snakemake's own `configfile:` directive (but `ablations.reward_mixes`, when given, replaces the toy's mixes:
# tafs.config.merge_defaults). (Files given with --configfile are read by Snakemake itself.)
from tafs.config import ConfigError, load_config_file, merge_defaults

try:
    config.update(merge_defaults(load_config_file("config.yaml"), config))
except ConfigError as e:
    sys.exit(f"error: {e}")


# The MLflow experiment's readable name: config `experiment`, else the names of the --configfile files (tafs.tracking).
if not config.get("experiment"):
    _given = [os.path.splitext(os.path.basename(f))[0] for f in workflow.configfiles
              if os.path.abspath(f) != os.path.abspath("config.yaml")]
    config["experiment"] = "+".join(_given) or "config"


# Jobs call `python -m tafs` and `snakemake --report`: make them the interpreter running this workflow,
# so `.venv/bin/snakemake` works without activating the venv (Slurm jobs inherit PATH: --export=ALL).
from tafs.job_launch import export_interpreter

export_interpreter()

# On Slurm the training jobs get SIGUSR1 before their time limit (workflow/profiles/slurm: --signal=USR1@600), sent
# to every process of the job step: the Snakemake that runs the job there must not die of it (its default action),
# or the step would end and take the trainer, which checkpoints on it (tafs/train/preempt.py), along.
import signal

try:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
except ValueError:  # not the main thread (Snakemake's API in a thread): no signals arrive there anyway
    pass


# Validated (and defaults filled in) before any job runs; errors name the offending key, one line each.
from tafs.config import schema_errors

_errors = schema_errors(config, "workflow/schemas/config.schema.yaml")
if _errors:
    sys.exit("error: config validation failed (workflow/schemas/config.schema.yaml):" + "".join(
        f"\n  {e}" for e in _errors))
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/eval_outputs.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/base.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        rules.tables.output,
        rules.mlflow_ingest.output,
        [str(L.prompts(split)) for split in ("train", "test")],
    default_target: True


# The HTML report (tables, Figure 4, sample grids) after every successful run that built the tables;
# `snakemake --report results/report.html` rebuilds it by hand.
onsuccess:
    if config.get("report", True) and L.table("table1", "csv").exists():
        shell(f"snakemake --report {L.report_html} --configfile {L.config_json} --nolock --quiet all "
              f"> {L.log('report.log')} 2>&1 || echo 'report failed: see {L.log('report.log')}'")
