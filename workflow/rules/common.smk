# Shared by the rules: everything comes from tafs.dag.Plan (built once, validated before any job runs) and
# the results layout tafs.paths.Layout. Rules only wire paths and call `python -m tafs <stage>`.
import json
import os
import re
import shlex
import sys

from tafs import owner
from tafs.config import ConfigError, redact
from tafs.dag import Plan, Untracked, quoted
from tafs.job_launch import export_tracking, job_gpus, logged, tafs_launcher
from tafs.paths import ModelRef

# A results folder belongs to the config that made it (tafs.owner): another config stops here, before any job.
OWNER = owner.record(config, owner.sources(workflow.overwrite_configfiles, workflow.config_settings.config))
try:
    PLAN = Plan(config)
    owner.check(config, OWNER["config_sources"])
except ConfigError as e:  # bad config or input file: one clear message, no job starts, nothing is written
    sys.exit(f"error: {e}")
L = PLAN.layout
export_tracking(PLAN.tracking_target())  # jobs (local and on Slurm, --export=ALL) find the MLflow server here
GRID = PLAN.grid  # every training run and which table row it fills (tafs/grid.py)
BASE = ModelRef.base()
RUN = ModelRef.run("{run}", "{seed}")  # a run at a seed, as wildcards
# The software environment of the rules (their `conda` directive): the repository's environment.yml, used with
# `--sdm conda` (docs/cluster.md, "Software environment"); without that flag, jobs run in the interpreter that runs
# Snakemake (the Snakefile's export_interpreter).
CONDA_ENV = os.path.join(workflow.basedir, "environment.yml")
