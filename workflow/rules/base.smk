# The models: downloads from the hub (once, on the host running Snakemake: compute nodes may have no
# network), the models the task builds (TaskSpec.builds), a tiny random base pipeline, tiny random reward models.
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
        conda:
            CONDA_ENV
        shell:
            logged("python -m tafs download --hub {params.hub} --revision {params.revision} {params.patterns} "
                   "--out {output}")


# The models the task's world builds (TaskSpec.builds: the toy base when `model.pretrained: null`, the toy CLIP-like
# scorer for `reward_models.clip.path: null`), with the `pretrain` stage's resources; resumable ones keep their
# checkpoints outside the declared output (Snakemake deletes outputs before a run).
BUILT = PLAN.built_models()

if BUILT:

    rule build_model:
        output:
            directory(str(L.built_model("{name}"))),
        wildcard_constraints:
            name="|".join(map(re.escape, BUILT)),
        params:
            args=lambda wc: PLAN.build_model_args(wc.name),
        threads: PLAN.stage_threads("pretrain")
        resources:
            **PLAN.stage_resources("pretrain"),
        log:
            str(L.log("build_model", "{name}.log")),
        conda:
            CONDA_ENV
        shell:
            logged("python -m tafs {params.args} --out {output} --threads {threads}")

if PLAN.tiny_base():

    rule tiny_base:
        output:
            directory(str(L.base_model)),
        params:
            family=PLAN.tiny_base(),
        resources:
            **PLAN.stage_resources("default"),
        log:
            str(L.log("tiny_base.log")),
        conda:
            CONDA_ENV
        shell:
            logged("python -m tafs tiny-pipeline --family {params.family} --out {output}")


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
        conda:
            CONDA_ENV
        shell:
            logged("python -m tafs tiny-reward --model {wildcards.model} --out {output}")
