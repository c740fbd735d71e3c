# GRPO training runs: one per (method, seed). A method is `train` deep-merged with methods[m].train.


rule train:
    input:
        model=base_model_dir(),
    output:
        adapter=directory(f"{R}/runs/{{method}}/seed{{seed}}/adapter"),
        metrics=f"{R}/runs/{{method}}/seed{{seed}}/metrics.jsonl",
        summary=f"{R}/runs/{{method}}/seed{{seed}}/train_summary.json",
    wildcard_constraints:
        method="|".join(config["methods"]),
        seed=r"\d+",
    params:
        cfg=lambda wc: train_cfg_json(wc.method, int(wc.seed)),
        out=lambda wc, output: str(Path(output.summary).parent),
        # Resumable checkpoints live outside the declared outputs (Snakemake deletes those first).
        ckpt=lambda wc: f"{R}/checkpoints/runs/{wc.method}/seed{wc.seed}",
        # `python -m tafs`, or `accelerate launch ... -m tafs` with one process per GPU when gpu > 1
        launch=lambda wc, resources: tafs_launcher(resources),
        gpus=lambda wc, resources: job_gpus(resources),
    threads: config["threads"]
    resources:
        **stage_resources("train"),
    log:
        f"{R}/logs/train/{{method}}_seed{{seed}}.log",
    shell:
        "{params.launch} train --model {input.model} --cfg {params.cfg} --out {params.out} "
        "--ckpt-dir {params.ckpt} --threads {threads} --expect-gpus {params.gpus} 2> {log}"


rule eval_run:
    input:
        model=base_model_dir(),
        adapter=f"{R}/runs/{{method}}/seed{{seed}}/adapter",
    output:
        metrics=f"{R}/eval/runs/{{method}}/seed{{seed}}/{{sampler}}/nfe{{nfe}}/metrics.json",
        grid=f"{R}/eval/runs/{{method}}/seed{{seed}}/{{sampler}}/nfe{{nfe}}/grid.png",
    wildcard_constraints:
        method="|".join(config["methods"]),
        sampler="ode|annealed",
        seed=r"\d+",
        nfe=r"\d+",
    params:
        cfg=cfg_json("eval"),
        out=subpath(output.metrics, parent=True),
    threads: 1
    resources:
        **stage_resources("eval"),
    log:
        f"{R}/logs/eval/{{method}}_seed{{seed}}_{{sampler}}_nfe{{nfe}}.log",
    shell:
        "python -m tafs evaluate --model {input.model} --adapter {input.adapter} --name {wildcards.method} "
        "--sampler {wildcards.sampler} --nfe {wildcards.nfe} --cfg {params.cfg} --out {params.out} "
        "--threads {threads} 2> {log}"
