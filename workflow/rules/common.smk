# Shared by the rules: everything comes from tafs.dag.Plan (built once, validated before any job runs) and
# the results layout tafs.paths.Layout. Rules only wire paths and call `python -m tafs <stage>`.
import json
import re
import shlex
import sys

from tafs.config import ConfigError
from tafs.dag import Plan, job_gpus, quoted, tafs_launcher
from tafs.paths import ModelRef

try:
    PLAN = Plan(config)
except ConfigError as e:  # bad config or input file: one clear message, no job starts, nothing is written
    sys.exit(f"error: {e}")
L = PLAN.layout
R = str(L.root)
GRID = PLAN.grid  # every training run and which table row it fills (tafs/grid.py)
BASE = ModelRef.base()
RUN = ModelRef.run("{run}", "{seed}")  # a run at a seed, as wildcards
