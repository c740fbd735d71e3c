# The task's prompt files (DESIGN §11): training and evaluation read them, so an edited file re-runs
# what depends on it. A user task's own file is this rule's input; a remote one (URL + sha256) is fetched
# first, on the host running Snakemake (compute nodes may have no network).
DATA_FILES = PLAN.data_files()

if DATA_FILES:

    rule fetch_data:
        output:
            str(PLAN.sources.cache / "data" / "{name}"),
        wildcard_constraints:
            name="|".join(map(re.escape, DATA_FILES)),
        params:
            url=lambda wc: DATA_FILES[wc.name].url,
            sha256=lambda wc: DATA_FILES[wc.name].sha256,
        localrule: True
        log:
            str(L.log("fetch_data", "{name}.log")),
        conda:
            CONDA_ENV
        shell:
            logged("python -m tafs fetch-data --url {params.url} --sha256 {params.sha256} --out {output}")


rule prompts:
    input:
        source=lambda wc: PLAN.prompt_sources(wc.split),
        exclude=lambda wc: PLAN.prompt_excludes(wc.split),
    output:
        str(L.prompts("{split}")),
    wildcard_constraints:
        split="train|test",
    params:
        task=PLAN.task.name,
        tasks=PLAN.tasks_json(),
        rewards=quoted(PLAN.all_train_rewards()),
    resources:
        **PLAN.stage_resources("default"),
    log:
        str(L.log("prompts", "{split}.log")),
    conda:
        CONDA_ENV
    shell:
        logged("python -m tafs prompts --task {params.task} --tasks {params.tasks} --split {wildcards.split} "
               "--source '{input.source}' --exclude '{input.exclude}' --train-rewards {params.rewards} --out {output}")
