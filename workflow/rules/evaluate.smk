# Evaluation sweeps: one job per model and sampler evaluates every NFE of the sweep (the model and the
# scorers load once); each NFE writes eval/.../nfe{N}/metrics.json and grid.png.


def _sweep_outputs(prefix, nfes, category):
    """metrics.json and grid.png per NFE; the grid at the tables' NFE goes into the Snakemake report."""
    out = {f"m{n}": f"{prefix}/nfe{n}/metrics.json" for n in nfes}
    for n in nfes:
        grid = f"{prefix}/nfe{n}/grid.png"
        out[f"g{n}"] = grid if n != config["tables"]["main_nfe"] else report(
            grid, caption="../report/grid.rst", category="Samples", subcategory=category)
    return out


rule eval_base:
    input:
        model=base_model_dir(),
        scorer=scorer_inputs(config.get("reward_models", {})),
    output:
        **_sweep_outputs(f"{R}/eval/base/{{sampler}}", config["sweep"]["base_nfe"], "base"),
    wildcard_constraints:
        sampler="ode|annealed",
    params:
        cfg=eval_cfg_json(),
        nfe=" ".join(map(str, config["sweep"]["base_nfe"])),
        out=lambda wc: f"{R}/eval/base/{wc.sampler}",
    threads: 1
    resources:
        **stage_resources("eval"),
    log:
        f"{R}/logs/eval/base_{{sampler}}.log",
    shell:
        "python -m tafs evaluate --model {input.model} --name base --sampler {wildcards.sampler} "
        "--nfe {params.nfe} --cfg {params.cfg} --out {params.out} --threads {threads} 2> {log}"


rule eval_run:
    input:
        model=base_model_dir(),
        adapter=f"{R}/runs/{{run}}/seed{{seed}}/adapter",
        scorer=scorer_inputs(config.get("reward_models", {})),
    output:
        **_sweep_outputs(f"{R}/eval/runs/{{run}}/seed{{seed}}/{{sampler}}", config["sweep"]["run_nfe"],
                         "{run}"),
    wildcard_constraints:
        run="|".join(map(re.escape, GRID.runs)),
        sampler="ode|annealed",
        seed=r"\d+",
    params:
        cfg=eval_cfg_json(),
        nfe=" ".join(map(str, config["sweep"]["run_nfe"])),
        out=lambda wc: f"{R}/eval/runs/{wc.run}/seed{wc.seed}/{wc.sampler}",
    threads: 1
    resources:
        **stage_resources("eval"),
    log:
        f"{R}/logs/eval/{{run}}_seed{{seed}}_{{sampler}}.log",
    shell:
        "python -m tafs evaluate --model {input.model} --adapter {input.adapter} --name {wildcards.run} "
        "--sampler {wildcards.sampler} --nfe {params.nfe} --cfg {params.cfg} --out {params.out} "
        "--threads {threads} 2> {log}"
