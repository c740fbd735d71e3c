"""Tables from metrics.json files (pandas): one row per (model, sampler, NFE)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tafs.io import read_json
from tafs.toyworld.prompts import CATEGORIES


def eval_frame(paths: list[Path]) -> pd.DataFrame:
    """Long table of evaluations: mean and 95 % CI of each metric plus per-category strict accuracy."""
    rows = []
    for p in paths:
        m = read_json(p)
        row = {"model": m["model"], "sampler": m["sampler"], "nfe": m["nfe"], "n": m["n"]}
        for key in ("correct", "dense"):
            row[key] = m["metrics"][key]["mean"]
            row[f"{key}_ci95"] = m["metrics"][key]["ci95"]
        row["dense_chance"] = m["chance"]["dense"]
        for c in CATEGORIES:
            row[c] = m["metrics"]["correct"]["by_category"][c]["mean"]
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["model", "sampler", "nfe"]).reset_index(drop=True)


def to_markdown(df: pd.DataFrame) -> str:
    """Percentages with CIs, as the README shows them."""
    out = pd.DataFrame({"model": df["model"], "sampler": df["sampler"], "NFE": df["nfe"]})
    for key in ("correct", "dense"):
        out[key] = [f"{100 * m:.1f} ± {100 * c:.1f}" for m, c in zip(df[key], df[f"{key}_ci95"])]
    for c in CATEGORIES:
        out[c] = [f"{100 * v:.0f}" for v in df[c]]
    return out.to_markdown(index=False)
