# The base model: the toy base is pretrained here unless config.model.pretrained names a folder.
if not config["model"]["pretrained"]:

    rule pretrain_base:
        output:
            directory(f"{R}/models/base"),
        params:
            cfg=cfg_json("pretrain"),
            # Resumable checkpoints live outside the declared output (Snakemake deletes outputs before a run).
            ckpt=f"{R}/checkpoints/pretrain",
        threads: config["threads"]
        resources:
            **stage_resources("pretrain"),
        log:
            f"{R}/logs/pretrain_base.log",
        shell:
            "python -m tafs pretrain --cfg {params.cfg} --out {output} --ckpt-dir {params.ckpt} "
            "--threads {threads} 2> {log}"


# The toy CLIP-like scorer (a learned reward model), trained on rendered prompts when a reward model
# asks for it (`reward_models: {clip: {path: null}}`).
if scorer_inputs(config.get("reward_models", {})):

    rule train_scorer:
        output:
            directory(scorer_dir()),
        params:
            cfg=shlex.quote(json.dumps(config.get("scorer", {}), sort_keys=True)),
        threads: config["threads"]
        resources:
            **stage_resources("pretrain"),
        log:
            f"{R}/logs/train_scorer.log",
        shell:
            "python -m tafs train-scorer --cfg {params.cfg} --out {output} --threads {threads} 2> {log}"
