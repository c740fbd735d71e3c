rule figure4:
    input:
        base_evals(),
        run_evals(),
    output:
        png=f"{R}/figures/figure4.png",
        pdf=f"{R}/figures/figure4.pdf",
    params:
        metric=config["figure4"]["metric"],
    log:
        f"{R}/logs/figure4.log",
    localrule: True
    shell:
        "python -m tafs figure4 --metrics {input} --metric {params.metric} --out {output.png} 2> {log}"
