rule prompts:
    output:
        f"{R}/prompts/{{split}}.jsonl",
    wildcard_constraints:
        split="train|test",
    log:
        f"{R}/logs/prompts/{{split}}.log",
    shell:
        "python -m tafs prompts --split {wildcards.split} --out {output} 2> {log}"
