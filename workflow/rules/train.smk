# GRPO training runs: one per (run, seed). Runs come from tafs.grid (methods x ablations, deduplicated).


rule train:
    input:
        model=base_model_dir(),
        scorer=lambda wc: scorer_inputs(GRID.runs[wc.run].train["advantage"]["rewards"]),
    output:
        adapter=directory(f"{R}/runs/{{run}}/seed{{seed}}/adapter"),
        metrics=f"{R}/runs/{{run}}/seed{{seed}}/metrics.jsonl",
        summary=f"{R}/runs/{{run}}/seed{{seed}}/train_summary.json",
    wildcard_constraints:
        run="|".join(map(re.escape, GRID.runs)),
        seed=r"\d+",
    params:
        cfg=lambda wc: shlex.quote(json.dumps(train_cfg(wc.run, int(wc.seed)), sort_keys=True)),
        out=lambda wc, output: str(Path(output.summary).parent),
        # Resumable checkpoints live outside the declared outputs (Snakemake deletes those first).
        ckpt=lambda wc: f"{R}/checkpoints/runs/{wc.run}/seed{wc.seed}",
        # `python -m tafs`, or `accelerate launch ... -m tafs` with one process per GPU when gpu > 1
        launch=lambda wc, resources: tafs_launcher(resources),
        gpus=lambda wc, resources: job_gpus(resources),
    threads: config["threads"]
    resources:
        **stage_resources("train"),
    log:
        f"{R}/logs/train/{{run}}_seed{{seed}}.log",
    shell:
        "{params.launch} train --model {input.model} --cfg {params.cfg} --out {params.out} "
        "--ckpt-dir {params.ckpt} --threads {threads} --expect-gpus {params.gpus} 2> {log}"
