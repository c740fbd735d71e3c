# GRPO training runs: one per (run, seed). Runs come from tafs.grid (methods x ablations, deduplicated).


rule train:
    input:
        model=PLAN.base_model(),
        prompts=str(L.prompts("train")),
        rewards=lambda wc: PLAN.reward_inputs(PLAN.train_rewards(wc.run)),
        # train.eval_every: the evaluation prompts and the metrics' models (tafs/train/periodic_eval.py)
        eval_inputs=lambda wc: PLAN.train_eval_inputs(wc.run),
    output:
        adapter=directory(str(L.adapter("{run}", "{seed}"))),
        metrics=str(L.train_metrics("{run}", "{seed}")),
        summary=str(L.train_summary("{run}", "{seed}")),
    wildcard_constraints:
        run="|".join(map(re.escape, GRID.runs)),
        seed=r"\d+",
    params:
        # What changes the result (a change re-runs the job, and training starts afresh) ...
        cfg=lambda wc: quoted(PLAN.train_job(wc.run, int(wc.seed))[0]),
        model_cfg=quoted(PLAN.train_model_options()),
        # ... and what does not (memory/speed settings, model folders): untracked, so changing one neither re-runs
        # the job nor restarts training (tafs/train/identity.py).
        runtime=lambda wc: Untracked(quoted(PLAN.train_job(wc.run, int(wc.seed))[1])),
        out=lambda wc: str(L.run_dir(wc.run, wc.seed)),
        # Resumable checkpoints live outside the declared outputs (Snakemake deletes those first).
        ckpt=lambda wc: str(L.run_checkpoints(wc.run, wc.seed)),
        # `python -m tafs`, or `accelerate launch ... -m tafs` with one process per GPU when gpu > 1; untracked too:
        # the GPU count does not change the result (docs/cluster.md), a checkpoint resumes under another one
        launch=lambda wc, resources: Untracked(tafs_launcher(resources)),
        gpus=lambda wc, resources: Untracked(str(job_gpus(resources))),
    threads: PLAN.stage_threads("train")
    resources:
        **PLAN.stage_resources("train"),
    log:
        str(L.log("train", "{run}_seed{seed}.log")),
    conda:
        CONDA_ENV
    # A failing job keeps its exit code (keep_rc): 75 is a slice that stopped early with a checkpoint
    # (tafs/train/preempt.py; `sacct` shows it), which the Slurm profile re-submits.
    shell:
        logged("{params.launch} train --model {input.model} --model-cfg {params.model_cfg} --prompts {input.prompts} "
               "--cfg {params.cfg} --runtime {params.runtime} "
               "--out {params.out} --ckpt-dir {params.ckpt} --threads {threads} --expect-gpus {params.gpus}",
               keep_rc=True)
