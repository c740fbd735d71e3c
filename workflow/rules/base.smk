# The base model: the toy base is pretrained here unless config.model.pretrained names a folder.
if not config["model"].get("pretrained"):

    rule pretrain_base:
        output:
            directory(str(L.base_model)),
        params:
            cfg=quoted(config["pretrain"]),
            # Resumable checkpoints live outside the declared output (Snakemake deletes outputs before a run).
            ckpt=str(L.checkpoints("pretrain")),
        threads: config["threads"]
        resources:
            **PLAN.stage_resources("pretrain"),
        log:
            str(L.log("pretrain_base.log")),
        shell:
            "python -m tafs pretrain --cfg {params.cfg} --out {output} --ckpt-dir {params.ckpt} "
            "--threads {threads} 2> {log}"


# The toy CLIP-like scorer (a learned reward model), trained on rendered prompts when a reward model
# asks for it (`reward_models: {clip: {path: null}}`).
if PLAN.scorer_inputs(config.get("reward_models", {})):

    rule train_scorer:
        output:
            directory(str(L.scorer_model)),
        params:
            cfg=quoted(config.get("scorer", {})),
        threads: config["threads"]
        resources:
            **PLAN.stage_resources("pretrain"),
        log:
            str(L.log("train_scorer.log")),
        shell:
            "python -m tafs train-scorer --cfg {params.cfg} --out {output} --threads {threads} 2> {log}"
