# GRPO training runs: one per (run, seed). Runs come from tafs.grid (methods x ablations, deduplicated).


rule train:
    input:
        model=PLAN.base_model(),
        prompts=str(L.prompts("train")),
        rewards=lambda wc: PLAN.reward_inputs(PLAN.train_rewards(wc.run)),
    output:
        adapter=directory(str(L.adapter("{run}", "{seed}"))),
        metrics=str(L.train_metrics("{run}", "{seed}")),
        summary=str(L.train_summary("{run}", "{seed}")),
    wildcard_constraints:
        run="|".join(map(re.escape, GRID.runs)),
        seed=r"\d+",
    params:
        cfg=lambda wc: quoted(PLAN.train_cfg(wc.run, int(wc.seed))),
        model_cfg=quoted(PLAN.model_options("train")),
        out=lambda wc: str(L.run_dir(wc.run, wc.seed)),
        # Resumable checkpoints live outside the declared outputs (Snakemake deletes those first).
        ckpt=lambda wc: str(L.run_checkpoints(wc.run, wc.seed)),
        # `python -m tafs`, or `accelerate launch ... -m tafs` with one process per GPU when gpu > 1
        launch=lambda wc, resources: tafs_launcher(resources),
        gpus=lambda wc, resources: job_gpus(resources),
    threads: PLAN.stage_threads("train")
    resources:
        **PLAN.stage_resources("train"),
    log:
        str(L.log("train", "{run}_seed{seed}.log")),
    shell:
        "{params.launch} train --model {input.model} --model-cfg {params.model_cfg} --prompts {input.prompts} "
        "--cfg {params.cfg} "
        "--out {params.out} --ckpt-dir {params.ckpt} --threads {threads} --expect-gpus {params.gpus}" + LOGGED
