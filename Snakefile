# TAFS-GRPO reproduction DAG. Logic lives in the `tafs` package; every rule is a thin CLI call.
#   snakemake --cores all                                   # the embedded toy world (CPU)
#   snakemake --cores all --configfile workflow/presets/smoke.yaml   # the same DAG in ~3 minutes
from snakemake.utils import min_version, validate

min_version("8.20")


configfile: "config.yaml"


# Validated (and defaults filled in) before any job runs; errors name the offending key.
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/base.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.figure4.output,
        expand(f"{R}/prompts/{{split}}.jsonl", split=["train", "test"]),
    default_target: True
