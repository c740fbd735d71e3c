# What the evaluation rules (evaluate.smk) declare, kept apart from them (Snakemake's lint wants functions in files
# without rules). An evaluation job writes eval/<model>/<sampler>/nfe{N}/metrics.json and samples.png. With
# eval.shard_jobs K > 1 each of those rules instead makes K scatter jobs per model ({job} = 0..K-1), each writing its
# share of the prompt shards and then eval/<model>/shard_jobs/job{job}of{K}.json, and gather_<name> writes the files
# above from the shards (tafs/eval_jobs.py); the same rules, outputs and commands as with K = 1 otherwise.
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


def _gathers():
    """(rule, model pattern, its ModelRef from the wildcards, outputs, samplers, NFEs, wildcard constraints) of each
    evaluation rule of evaluate.smk; its outputs are those of the K = 1 job, now written by the gather."""
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
