# Tables 1-7, Figure 4, the MLflow ingest and the Snakemake report (all local: light and single-writer).
TABLES = [f"table{i}" for i in range(1, 8)]


rule config_snapshot:
    output:
        f"{R}/config.json",
    params:
        cfg=json.dumps(config, sort_keys=True),  # a changed config re-runs this rule (params trigger)
    localrule: True
    run:
        from tafs.io import write_json

        write_json(output[0], config)


rule grid_manifest:
    input:
        f"{R}/config.json",
    output:
        f"{R}/grid.json",
    localrule: True
    log:
        f"{R}/logs/grid_manifest.log",
    shell:
        "python -m tafs grid --config {input} --out {output} 2> {log}"


rule tables:
    input:
        grid=f"{R}/grid.json",
        evals=base_evals() + run_evals(),
        summaries=train_summaries(),
    output:
        **{f"{t}_csv": report(f"{R}/tables/{t}.csv", caption=f"../report/{t}.rst", category="Tables")
           for t in TABLES},
        **{f"{t}_{ext}": f"{R}/tables/{t}.{ext}" for t in TABLES for ext in ("md", "tex")},
        captions=f"{R}/tables/captions.json",
        png=report(f"{R}/figures/figure4.png", caption="../report/figure4.rst", category="Figure 4"),
        pdf=f"{R}/figures/figure4.pdf",
    params:
        metric=config["figure4"]["metric"],
    localrule: True
    log:
        f"{R}/logs/tables.log",
    shell:
        "python -m tafs tables --grid {input.grid} --results {R} --out {R}/tables --figure {output.png} "
        "--metric {params.metric} 2> {log}"


rule mlflow_ingest:
    input:
        rules.tables.output,
        config=f"{R}/config.json",
    output:
        f"{R}/mlflow/ingest.json",
    params:
        uri=f"sqlite:///{R}/mlflow.db",
    localrule: True
    log:
        f"{R}/logs/mlflow_ingest.log",
    shell:
        "python -m tafs mlflow-ingest --results {R} --uri {params.uri} --config {input.config} "
        "--out {output} 2> {log}"
