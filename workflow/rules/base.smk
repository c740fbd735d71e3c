# The models: downloads from the hub (once, on the host running Snakemake: compute nodes may have no
# network), the base the DAG builds (the toy base, or a tiny random pipeline), the toy CLIP-like scorer.
DOWNLOADS = PLAN.downloads()

if DOWNLOADS:

    rule download:
        output:
            directory(str(PLAN.sources.cache / "{name}")),
        wildcard_constraints:
            name="|".join(map(re.escape, DOWNLOADS)),
        params:
            hub=lambda wc: DOWNLOADS[wc.name].repo,
            revision=lambda wc: DOWNLOADS[wc.name].revision,
            patterns=lambda wc: " ".join(
                [f"--allow {shlex.quote(p)}" for p in DOWNLOADS[wc.name].allow_patterns or ()]
                + [f"--ignore {shlex.quote(p)}" for p in DOWNLOADS[wc.name].ignore_patterns or ()]),
        localrule: True
        log:
            str(L.log("download", "{name}.log")),
        shell:
            "python -m tafs download --hub {params.hub} --revision {params.revision} {params.patterns} "
            "--out {output}" + LOGGED


if PLAN.builds_base() == "toy":

    rule pretrain_base:
        output:
            directory(str(L.base_model)),
        params:
            cfg=quoted(config["pretrain"]),
            # Resumable checkpoints live outside the declared output (Snakemake deletes outputs before a run).
            ckpt=str(L.checkpoints("pretrain")),
        threads: PLAN.stage_threads("pretrain")
        resources:
            **PLAN.stage_resources("pretrain"),
        log:
            str(L.log("pretrain_base.log")),
        shell:
            "python -m tafs pretrain --cfg {params.cfg} --out {output} --ckpt-dir {params.ckpt} "
            "--threads {threads}" + LOGGED

elif PLAN.builds_base():

    rule tiny_base:
        output:
            directory(str(L.base_model)),
        params:
            family=PLAN.builds_base(),
        resources:
            **PLAN.stage_resources("default"),
        log:
            str(L.log("tiny_base.log")),
        shell:
            "python -m tafs tiny-pipeline --family {params.family} --out {output}" + LOGGED


# The toy CLIP-like scorer (a learned reward model), trained on rendered prompts when a reward model
# asks for it (`reward_models: {clip: {path: null}}`).
if PLAN.uses_dag_scorer():

    rule train_scorer:
        output:
            directory(str(L.scorer_model)),
        params:
            cfg=quoted(config.get("scorer", {})),
        threads: PLAN.stage_threads("pretrain")
        resources:
            **PLAN.stage_resources("pretrain"),
        log:
            str(L.log("train_scorer.log")),
        shell:
            "python -m tafs train-scorer --cfg {params.cfg} --out {output} --threads {threads}" + LOGGED


# Tiny random reward models of the real classes (`reward_models.<name>.path: {tiny: <model>}`): CPU smoke runs
# of the real reward loaders (tafs.rewards.tiny).
TINY_REWARDS = PLAN.tiny_rewards()

if TINY_REWARDS:

    rule tiny_reward:
        output:
            directory(str(L.tiny_reward("{model}"))),
        wildcard_constraints:
            model="|".join(map(re.escape, TINY_REWARDS)),
        resources:
            **PLAN.stage_resources("default"),
        log:
            str(L.log("tiny_reward", "{model}.log")),
        shell:
            "python -m tafs tiny-reward --model {wildcards.model} --out {output}" + LOGGED
