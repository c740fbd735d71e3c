# Tables 1-7, Figure 4, the MLflow ingest and the Snakemake report (all local: light and single-writer).
# The tables are those of the registry (one module each; a report caption each: workflow/report/{table}.rst).
from tafs.report.tables import TABLES


rule config_snapshot:
    output:
        config=str(L.config_json),
        owner=str(owner.path(L.root)),  # this config now owns the results folder (never written by a dry run)
    params:
        # a changed config re-runs this rule (params trigger); secrets are redacted before they reach the shell
        cfg=quoted(redact(config)),
        owner=quoted(OWNER),
    localrule: True
    log:
        str(L.log("config_snapshot.log")),
    conda:
        CONDA_ENV
    shell:
        logged("python -m tafs config-snapshot --cfg {params.cfg} --out {output.config} --owner {params.owner} "
               "--owner-out {output.owner}")


rule grid_manifest:
    input:
        config=str(L.config_json),
        prompts=PLAN.eval_prompts(),
    output:
        str(L.manifest_json),
    localrule: True
    log:
        str(L.log("grid_manifest.log")),
    conda:
        CONDA_ENV
    shell:
        logged("python -m tafs grid --config {input.config} --prompts {input.prompts} --out {output}")


rule tables:
    input:
        manifest=str(L.manifest_json),
        evals=PLAN.eval_metrics_files(),
        summaries=PLAN.train_summaries(),
    output:
        **{f"{t}_csv": report(str(L.table(t, "csv")), caption=f"../report/{t}.rst", category="Tables")
           for t in TABLES},
        **{f"{t}_{ext}": str(L.table(t, ext)) for t in TABLES for ext in ("md", "tex")},
        captions=str(L.captions),
        png=report(str(L.figure("figure4", "png")), caption="../report/figure4.rst", category="Figure 4"),
        pdf=str(L.figure("figure4", "pdf")),
    params:
        results=lambda wc: str(L.root),
        out=lambda wc: str(L.tables_dir),
    localrule: True
    log:
        str(L.log("tables.log")),
    conda:
        CONDA_ENV
    shell:
        logged("python -m tafs tables --manifest {input.manifest} --results {params.results} --out {params.out} "
               "--figure {output.png}")


rule mlflow_ingest:
    input:
        rules.tables.output,
        config=str(L.config_json),
    output:
        str(L.mlflow_dir / "ingest.json"),
    params:
        results=lambda wc: str(L.root),
        uri=PLAN.tracking_uri(),  # the MLflow server of `tracking.uri`, else results/mlflow.db
    localrule: True
    log:
        str(L.log("mlflow_ingest.log")),
    conda:
        CONDA_ENV
    shell:
        logged("python -m tafs mlflow-ingest --results {params.results} --uri {params.uri} --config {input.config} "
               "--out {output}")
