"""``tafs summary``: every evaluation under a results folder as one table (pandas): a row per (model, sampler, NFE)."""

from __future__ import annotations

import pandas as pd

from tafs.io import read_json
from tafs.paths import Layout


def eval_frame(layout: Layout) -> pd.DataFrame:
    """Long table of evaluations: mean and 95 % CI of each metric, and each metric's per-category means."""
    rows = []
    for entry in layout.finished_evals():
        m = read_json(entry.folder / "metrics.json")
        row = {"model": entry.model.key, "sampler": entry.sampler, "nfe": entry.nfe, "n": m["n"]}
        for key, stat in m["metrics"].items():
            row[key] = stat["mean"]
            row[f"{key}_ci95"] = stat["ci95"]
            for cat, c in (stat.get("by_category") or {}).items():
                row[f"{key}/{cat}"] = c["mean"]
        rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no metrics.json under {layout.root}/eval: run the pipeline first")
    return pd.DataFrame(rows).sort_values(["model", "sampler", "nfe"]).reset_index(drop=True)


def percent_metrics(layout: Layout) -> set[str]:
    """The metrics the task shows in % (from manifest.json; none when the DAG has not written it)."""
    if not layout.manifest_json.is_file():
        return set()
    task = read_json(layout.manifest_json).get("task", {})
    return {k for k, m in task.get("metrics", {}).items() if m.get("percent")}


def to_markdown(df: pd.DataFrame, percent: set[str] = frozenset()) -> str:
    """Means ± CIs (metrics in ``percent`` in %), then the per-category means."""
    out = df[["model", "sampler", "nfe"]].rename(columns={"nfe": "NFE"})
    metrics = [c for c in df.columns if f"{c}_ci95" in df.columns]
    for key in metrics:
        scale, digits = (100, 1) if key in percent else (1, 3)
        out[key] = [f"{scale * m:.{digits}f} ± {scale * c:.{digits}f}" for m, c in zip(df[key], df[f"{key}_ci95"])]
    for col in [c for c in df.columns if "/" in c]:
        scale, digits = (100, 0) if col.split("/")[0] in percent else (1, 3)
        out[col] = [f"{scale * v:.{digits}f}" for v in df[col]]
    return out.to_markdown(index=False)
