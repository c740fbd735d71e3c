"""Figure 4: a metric vs NFE per Table-1 model (mean over seeds with 95 % CI bands), from the grid manifest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tafs.io import atomic_path
from tafs.report.manifest import Manifest
from tafs.report.results import base_eval_path, base_eval_stats, baseline_eval_stats, run_eval_stats
from tafs.report.table_model import metric_format, metric_header

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def figure4_frame(m: Manifest, results: Path, metric: str) -> pd.DataFrame:
    """Long frame (series, kind, sampler, nfe, mean, ci95) of ``metric`` vs NFE.

    kind is "run" (each Table-1 run over ``run_nfe`` with its eval sampler; every file required),
    "base" (the base model with the ODE sampler at the same NFEs, where evaluated) or "base_ref"
    (the base at the largest evaluated ODE NFE beyond ``run_nfe``, e.g. 28: a reference line) or "baseline"
    (an evaluation-only model at its NFEs inside the ``run_nfe`` range, through its own pipeline).
    """
    rows = []
    for label, run in m.rows("table1"):
        sampler = m.run(run, "figure4").eval_sampler
        for nfe in m.run_nfe:
            st = run_eval_stats(results, m, run, nfe, "figure4")[metric]
            rows.append({"series": label, "kind": "run", "sampler": sampler, "nfe": nfe,
                         "mean": st.mean, "ci95": st.ci95})
    lo, hi = min(m.run_nfe, default=0), max(m.run_nfe, default=0)
    for name, (label, nfes, _) in m.baselines.items():
        for nfe in (n for n in nfes if lo <= n <= hi):
            st = baseline_eval_stats(results, m, name, nfe, "figure4")[metric]
            rows.append({"series": label, "kind": "baseline", "sampler": "pipeline", "nfe": nfe,
                         "mean": st.mean, "ci95": st.ci95})
    base_nfes = [n for n in m.run_nfe if base_eval_path(results, "ode", n).is_file()]
    ref = [n for s, n in m.base_evals if s == "ode" and n > max(m.run_nfe, default=0)
           and base_eval_path(results, "ode", n).is_file()]
    for kind, nfes in (("base", base_nfes), ("base_ref", sorted(ref)[-1:])):
        for nfe in nfes:
            st = base_eval_stats(results, m, "ode", nfe, "figure4")[metric]
            series = f"{m.base_label} (ODE)" if kind == "base" else f"{m.base_label} (ODE, {nfe} NFE)"
            rows.append({"series": series, "kind": kind, "sampler": "ode", "nfe": nfe,
                         "mean": st.mean, "ci95": st.ci95})
    return pd.DataFrame(rows, columns=["series", "kind", "sampler", "nfe", "mean", "ci95"])


def _plot_panel(ax, frame: pd.DataFrame, scale: float, ylabel: str, markers: dict[str, str]) -> None:
    """One panel: a line with a CI band per series; the base reference as a dashed horizontal line."""
    for label, pts in frame[frame["kind"] != "base_ref"].groupby("series", sort=False):
        pts = pts.sort_values("nfe")
        mean, ci = pts["mean"] * scale, pts["ci95"].fillna(0.0) * scale
        kind = pts["kind"].iloc[0]
        style = dict(linestyle=":", color="0.35") if kind == "base" else dict(linestyle="--") if kind == "baseline" \
            else {}
        line, = ax.plot(pts["nfe"], mean, marker=markers[label], markersize=5, label=label, **style)
        ax.fill_between(pts["nfe"], mean - ci, mean + ci, color=line.get_color(), alpha=0.15, linewidth=0)
    for _, ref in frame[frame["kind"] == "base_ref"].iterrows():
        ax.axhline(ref["mean"] * scale, color="k", linestyle="--", linewidth=1, label=ref["series"])
    ticks = sorted(frame.loc[frame["kind"] != "base_ref", "nfe"].unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("NFE (sampling steps)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def figure4(m: Manifest, results: Path, out_png: Path, metric: str, second: str | None = None) -> str:
    """Figure 4: ``metric`` vs NFE per Table-1 run, and ``second`` in a second panel when it differs and
    has data. Writes ``out_png`` and a PDF beside it atomically; returns a one-sentence caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = {metric: figure4_frame(m, Path(results), metric)}
    if second and second != metric:
        extra = figure4_frame(m, Path(results), second)
        if extra["mean"].notna().any():
            frames[second] = extra
    series = list(dict.fromkeys(s for f in frames.values() for s in f["series"]))
    markers = {s: _MARKERS[i % len(_MARKERS)] for i, s in enumerate(series)}
    fig, axes = plt.subplots(1, len(frames), figsize=(4.2 * len(frames), 3.6), squeeze=False)
    for ax, (key, frame) in zip(axes[0], frames.items()):
        _plot_panel(ax, frame, metric_format(m, key)[0], metric_header(m, key), markers)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    n = len(m.seeds)
    band = (f"95 % CI over {n} seeds (Student t)" if n > 1 else "the evaluation's 95 % CI over test images (one seed)")
    world = f" ({m.caption_prefix.removesuffix(' analogue of').lower()} world)" if m.caption_prefix else ""
    fig.suptitle(f"Figure 4{world}: quality vs NFE; bands: {band}", fontsize=9)
    rows = -(-len(labels) // 4)
    fig.tight_layout(rect=(0, 0.03 + 0.05 * rows, 1, 1))
    out_png = Path(out_png)
    for path, fmt in ((out_png, "png"), (out_png.with_suffix(".pdf"), "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
    plt.close(fig)
    ref = frames[metric].loc[frames[metric]["kind"] == "base_ref", "nfe"]
    ref_note = f"; the dashed line is the base model with the ODE sampler at {int(ref.iloc[0])} NFE" if len(ref) else ""
    lead = f"{m.caption_prefix} Figure 4" if m.caption_prefix else "Figure 4"
    return (f"{lead} (quality across inference steps): {', '.join(m.label(k) for k in frames)} "
            f"vs NFE for each method with its evaluation sampler and the base model with the ODE sampler "
            f"(where evaluated); bands are {band}{ref_note}.")
