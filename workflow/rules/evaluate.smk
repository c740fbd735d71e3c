# Evaluation sweeps: one job per model (and seed) evaluates every sampler at every NFE of its sweep (the model and
# the rewards load once); each writes eval/<model>/<sampler>/nfe{N}/metrics.json and samples.png, or with
# eval.shard_jobs K > 1 is K scatter jobs and a gather job (what they declare: eval_outputs.smk).


rule eval_base:
    input:
        model=PLAN.base_model(),
        prompts=PLAN.eval_prompts(),
        rewards=PLAN.reward_inputs(PLAN.eval_reward_names()),
    output:
        **_eval_outputs(BASE, config["sweep"]["base_samplers"], config["sweep"]["base_nfe"], "base"),
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
        _eval_log("base"),
    conda:
        CONDA_ENV
    shell:
        logged("python -m tafs evaluate --model {input.model} --model-cfg {params.model_cfg} --prompts {input.prompts} "
               "--name base --sampler {params.samplers} --nfe {params.nfe} --cfg {params.cfg} --out {params.out} "
               "--threads {threads}" + SCATTER)


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
            **_eval_outputs(RUN, _samplers, _nfes, "{run}"),
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
            _eval_log("{run}_seed{seed}"),
        conda:
            CONDA_ENV
        shell:
            logged("python -m tafs evaluate --model {input.model} --model-cfg {params.model_cfg} "
                   "--adapter {input.adapter} --prompts {input.prompts} "
                   "--name {wildcards.run} --sampler {params.samplers} --nfe {params.nfe} --cfg {params.cfg} "
                   "--out {params.out} --threads {threads}" + SCATTER)


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
        output:  # K = 1: its metrics.json files (no samples.png declared); K > 1: the scatter job's done file
            *[str(L.eval_metrics(ModelRef.baseline(_name), "pipeline", n)) for n in PLAN.baseline_nfe(_name)
              if SHARD_JOBS == 1],
            **({} if SHARD_JOBS == 1 else _done_output(ModelRef.baseline(_name))),
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
            _eval_log(f"baseline_{_name}"),
        conda:
            CONDA_ENV
        shell:
            logged("python -m tafs evaluate-pipeline --model {input.model} {params.lora} --prompts {input.prompts} "
                   "--name {params.name} --nfe {params.nfe} --cfg {params.cfg} --baseline {params.baseline} "
                   "--out {params.out} --threads {threads}" + SCATTER)


# eval.shard_jobs K > 1: per evaluation rule, a gather job per model that waits for its K scatter jobs and writes the
# sweep's metrics.json and samples.png from their shards (no model, no reward, no GPU: the `default` resources).
for _rule, _model, _ref, _outputs, _samplers, _nfes, _constraints in _gathers() if SHARD_JOBS > 1 else []:

    rule:
        name:
            f"gather_{_rule}"
        input:
            done=[str(L.eval_shard_job(_model, j, SHARD_JOBS)) for j in range(SHARD_JOBS)],
            prompts=PLAN.eval_prompts(),
        output:
            **_outputs,
        wildcard_constraints:
            **_constraints,
        params:
            cfg=quoted(PLAN.eval_cfg()),
            samplers=" ".join(_samplers),
            nfe=" ".join(map(str, _nfes)),
            name=lambda wc, ref=_ref: ref(wc).name,
            out=lambda wc, ref=_ref: str(L.eval_model_dir(ref(wc))),
        threads: 1
        resources:
            **PLAN.stage_resources("default"),
        log:
            str(L.log("eval", f"gather_{_rule}" + ("_{run}_seed{seed}" if _model == RUN else "") + ".log")),
        conda:
            CONDA_ENV
        shell:
            logged("python -m tafs evaluate-gather --prompts {input.prompts} --name {params.name} "
                   "--sampler {params.samplers} --nfe {params.nfe} --cfg {params.cfg} --out {params.out} "
                   "--done {input.done}")
