rule prompts:
    output:
        f"{R}/prompts/{{split}}.jsonl",
    wildcard_constraints:
        split="train|test",
    resources:
        **stage_resources("default"),
    log:
        f"{R}/logs/prompts/{{split}}.log",
    shell:
        "python -m tafs prompts --split {wildcards.split} --out {output} 2> {log}"
