# The task's prompt files (DESIGN §11): training and evaluation read them, so an edited file re-runs
# what depends on it. A user task's own file is this rule's input.
rule prompts:
    input:
        lambda wc: PLAN.prompt_sources(wc.split),
    output:
        str(L.prompts("{split}")),
    wildcard_constraints:
        split="train|test",
    params:
        task=PLAN.task.name,
        tasks=PLAN.tasks_json(),
    resources:
        **PLAN.stage_resources("default"),
    log:
        str(L.log("prompts", "{split}.log")),
    shell:
        "python -m tafs prompts --task {params.task} --tasks {params.tasks} --split {wildcards.split} "
        "--out {output}" + LOGGED
