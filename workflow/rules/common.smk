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
from tafs.job_launch import job_gpus, tafs_launcher
from tafs.paths import ModelRef

# A results folder belongs to the config that made it (tafs.owner): another config stops here, before any job.
OWNER = owner.record(config, owner.sources(workflow.overwrite_configfiles, workflow.config_settings.config))
try:
    PLAN = Plan(config)
    owner.check(config, OWNER["config_sources"])
except ConfigError as e:  # bad config or input file: one clear message, no job starts, nothing is written
    sys.exit(f"error: {e}")
L = PLAN.layout
if PLAN.tracking_target():  # jobs (local and on Slurm, --export=ALL) find the MLflow server here
    os.environ["TAFS_TRACKING"] = PLAN.tracking_target()
R = str(L.root)
GRID = PLAN.grid  # every training run and which table row it fills (tafs/grid.py)
BASE = ModelRef.base()
RUN = ModelRef.run("{run}", "{seed}")  # a run at a seed, as wildcards
# Every job's stderr goes to its log; when it fails, the log's last lines (tafs ends with one line that says what
# is wrong, where, and what to do) also reach the console, before Snakemake's own error report.
LOGGED = " 2> {log} || {{ tail -n 3 {log} >&2; exit 1; }}"
