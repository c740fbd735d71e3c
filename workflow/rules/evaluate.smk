# Evaluation sweeps: one job per model (and seed) evaluates every sampler at every NFE of its sweep (the model and
# the rewards load once); each writes eval/<model>/<sampler>/nfe{N}/metrics.json and samples.png.
# With eval.shard_jobs K > 1 each of these rules is instead K scatter jobs per model ({job} = 0..K-1: their share of
# the prompt shards, then eval/<model>/shard_jobs/job{job}of{K}.json) and a rule gather_<rule> writes the files above
# from the shards (tafs/eval_jobs.py); the same rules, outputs and commands as with K = 1 otherwise.
SHARD_JOBS = PLAN.eval_shard_jobs()
# a scatter job's part of the command (nothing with K = 1)
SCATTER = "" if SHARD_JOBS == 1 else f" --shard-job {{wildcards.job}}/{SHARD_JOBS} --done {{output.done}}"


def _sweep_outputs(model, samplers, nfes, category):
    """metrics.json and samples.png per sampler and NFE; the grids at the tables' NFE go into the Snakemake report."""
    out = {}
    for s in samplers:
        for n in nfes:
            out[f"m_{s}{n}"] = str(L.eval_metrics(model, s, n))
            grid = str(L.eval_samples(model, s, n))
            out[f"g_{s}{n}"] = grid if n != config["tables"]["main_nfe"] else report(
                grid, caption="../report/samples.rst", category="Samples", subcategory=category)
    return out


def _done_output(model):
    """A scatter job's output (K > 1): its done file, {job} = 0..K-1."""
    return {"done": str(L.eval_shard_job(model, r"{job,\d+}", SHARD_JOBS))}


def _eval_outputs(model, samplers, nfes, category):
    """An evaluation job's outputs: the sweep's files (K = 1), or the scatter job's done file."""
    return _sweep_outputs(model, samplers, nfes, category) if SHARD_JOBS == 1 else _done_output(model)


def _eval_log(name):
    return str(L.log("eval", f"{name}.log" if SHARD_JOBS == 1 else f"{name}_job{{job}}.log"))


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
        out=str(L.eval_model_dir(BASE)),
    threads: PLAN.stage_threads("eval")
    resources:
        **PLAN.stage_resources("eval"),
    log:
        _eval_log("base"),
    shell:
        "python -m tafs evaluate --model {input.model} --model-cfg {params.model_cfg} --prompts {input.prompts} --name base "
        "--sampler {params.samplers} --nfe {params.nfe} --cfg {params.cfg} --out {params.out} "
        "--threads {threads}" + SCATTER + LOGGED


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
        shell:
            "python -m tafs evaluate --model {input.model} --model-cfg {params.model_cfg} --adapter {input.adapter} "
            "--prompts {input.prompts} "
            "--name {wildcards.run} --sampler {params.samplers} --nfe {params.nfe} --cfg {params.cfg} "
            "--out {params.out} --threads {threads}" + SCATTER + LOGGED


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
            out=str(L.eval_sweep(ModelRef.baseline(_name), "pipeline")),
        threads: PLAN.stage_threads("eval")
        resources:
            **PLAN.stage_resources("eval"),
        log:
            _eval_log(f"baseline_{_name}"),
        shell:
            "python -m tafs evaluate-pipeline --model {input.model} {params.lora} --prompts {input.prompts} "
            "--name {params.name} --nfe {params.nfe} --cfg {params.cfg} --baseline {params.baseline} "
            "--out {params.out} --threads {threads}" + SCATTER + LOGGED


# eval.shard_jobs K > 1: per evaluation rule, a gather job per model that waits for its K scatter jobs and writes the
# sweep's metrics.json and samples.png from their shards (no model, no reward, no GPU: the `default` resources).
def _gathers():
    """(rule, model pattern, its ModelRef from the wildcards, outputs, samplers, NFEs, wildcard constraints) of each
    evaluation rule above: the K = 1 rule's outputs, now the gather's."""
    sweep = config["sweep"]
    out = [("eval_base", BASE, lambda wc: BASE, _sweep_outputs(BASE, sweep["base_samplers"], sweep["base_nfe"], "base"),
            sweep["base_samplers"], sweep["base_nfe"], {})]
    out += [(rule, RUN, lambda wc: ModelRef.run(wc.run, wc.seed), _sweep_outputs(RUN, samplers, nfes, "{run}"),
             samplers, nfes, {"run": "|".join(map(re.escape, runs)), "seed": r"\d+"})
            for rule, samplers, nfes, runs in PLAN.eval_run_groups()]
    for name in config.get("baselines") or {}:
        ref = ModelRef.baseline(name)
        out.append((f"eval_baseline_{name}", ref, lambda wc, ref=ref: ref,
                    {f"m_{n}": str(L.eval_metrics(ref, "pipeline", n)) for n in PLAN.baseline_nfe(name)},
                    ["pipeline"], PLAN.baseline_nfe(name), {}))
    return out


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
        shell:
            "python -m tafs evaluate-gather --prompts {input.prompts} --name {params.name} --sampler {params.samplers} "
            "--nfe {params.nfe} --cfg {params.cfg} --out {params.out} --done {input.done}" + LOGGED
