# Evaluation sweeps: one job per model (and seed) evaluates every sampler at every NFE of its sweep (the model and
# the rewards load once); each writes eval/<model>/<sampler>/nfe{N}/metrics.json and samples.png (_sweep_outputs:
# common.smk).


rule eval_base:
    input:
        model=PLAN.base_model(),
        prompts=PLAN.eval_prompts(),
        rewards=PLAN.reward_inputs(PLAN.eval_reward_names()),
    output:
        **_sweep_outputs(BASE, config["sweep"]["base_samplers"], config["sweep"]["base_nfe"], "base"),
    params:
        cfg=quoted(PLAN.eval_cfg()),
        model_cfg=quoted(PLAN.model_options("eval")),
        samplers=" ".join(config["sweep"]["base_samplers"]),
        nfe=" ".join(map(str, config["sweep"]["base_nfe"])),
        out=lambda wc: str(L.eval_model_dir(BASE)),
    threads: PLAN.stage_threads("eval")
    resources:
        **PLAN.stage_resources("eval"),
    log:
        str(L.log("eval", "base.log")),
    conda:
        CONDA_ENV
    shell:
        logged("python -m tafs evaluate --model {input.model} --model-cfg {params.model_cfg} --prompts {input.prompts} "
               "--name base --sampler {params.samplers} --nfe {params.nfe} --cfg {params.cfg} --out {params.out} "
               "--threads {threads}")


# One rule per (samplers, NFEs) of the runs' sweeps (the runs of Tables 1-2 and Figure 4 sweep sweep.run_nfe; the
# ablation runs only the tables' NFE): a job per run and seed.
for _rule, _samplers, _nfes, _runs in PLAN.eval_run_groups():

    rule:
        name:
            _rule
        input:
            model=PLAN.base_model(),
            adapter=str(L.adapter("{run}", "{seed}")),
            prompts=PLAN.eval_prompts(),
            rewards=PLAN.reward_inputs(PLAN.eval_reward_names()),
        output:
            **_sweep_outputs(RUN, _samplers, _nfes, "{run}"),
        wildcard_constraints:
            run="|".join(map(re.escape, _runs)),
            seed=r"\d+",
        params:
            cfg=quoted(PLAN.eval_cfg()),
            model_cfg=quoted(PLAN.model_options("eval")),
            samplers=" ".join(_samplers),
            nfe=" ".join(map(str, _nfes)),
            out=lambda wc: str(L.eval_model_dir(ModelRef.run(wc.run, wc.seed))),
        threads: PLAN.stage_threads("eval")
        resources:
            **PLAN.stage_resources("eval"),
        log:
            str(L.log("eval", "{run}_seed{seed}.log")),
        conda:
            CONDA_ENV
        shell:
            logged("python -m tafs evaluate --model {input.model} --model-cfg {params.model_cfg} "
                   "--adapter {input.adapter} --prompts {input.prompts} "
                   "--name {wildcards.run} --sampler {params.samplers} --nfe {params.nfe} --cfg {params.cfg} "
                   "--out {params.out} --threads {threads}")


# Evaluation-only models (Table 1's baselines) through their own pipeline call, at their own NFEs: one rule
# per baseline (their NFE lists differ).
for _name in config.get("baselines") or {}:

    rule:
        name:
            f"eval_baseline_{_name}"
        input:
            **PLAN.baseline_inputs(_name),
            prompts=PLAN.eval_prompts(),
            rewards=PLAN.reward_inputs(PLAN.eval_reward_names()),
        output:
            [str(L.eval_metrics(ModelRef.baseline(_name), "pipeline", n)) for n in PLAN.baseline_nfe(_name)],
        params:
            cfg=quoted(PLAN.eval_cfg()),
            baseline=quoted(PLAN.baseline_cfg(_name)),
            nfe=" ".join(map(str, PLAN.baseline_nfe(_name))),
            lora=f"--lora {PLAN.baseline_inputs(_name)['lora']}" if "lora" in PLAN.baseline_inputs(_name) else "",
            name=_name,
            out=lambda wc, name=_name: str(L.eval_sweep(ModelRef.baseline(name), "pipeline")),
        threads: PLAN.stage_threads("eval")
        resources:
            **PLAN.stage_resources("eval"),
        log:
            str(L.log("eval", f"baseline_{_name}.log")),
        conda:
            CONDA_ENV
        shell:
            logged("python -m tafs evaluate-pipeline --model {input.model} {params.lora} --prompts {input.prompts} "
                   "--name {params.name} --nfe {params.nfe} --cfg {params.cfg} --baseline {params.baseline} "
                   "--out {params.out} --threads {threads}")
