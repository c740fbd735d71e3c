rule eval_base:
    input:
        model=base_model_dir(),
    output:
        metrics=f"{R}/eval/base/{{sampler}}/nfe{{nfe}}/metrics.json",
        grid=f"{R}/eval/base/{{sampler}}/nfe{{nfe}}/grid.png",
    wildcard_constraints:
        sampler="ode|annealed",
        nfe=r"\d+",
    params:
        cfg=cfg_json("eval"),
        out=subpath(output.metrics, parent=True),
    threads: 1
    resources:
        **stage_resources("eval"),
    log:
        f"{R}/logs/eval/base_{{sampler}}_nfe{{nfe}}.log",
    shell:
        "python -m tafs evaluate --model {input.model} --name base --sampler {wildcards.sampler} "
        "--nfe {wildcards.nfe} --cfg {params.cfg} --out {params.out} --threads {threads} 2> {log}"
