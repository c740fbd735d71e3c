"""Figure 4: a metric vs NFE per compared model under its declared sampler (mean over seeds with 95 % CI bands), from
the grid manifest. No line is chosen by a test metric: each model is drawn with the sampler its method declares."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tafs.io import atomic_path
from tafs.report.manifest import Manifest
from tafs.report.results import base_eval_path, base_eval_stats, baseline_eval_stats, run_eval_stats
from tafs.report.table_model import metric_format, metric_header

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def figure_rows(m: Manifest) -> list[tuple[str, str]]:
    """The methods Figure 4 compares: Table 2's (the paper draws its comparison), else Table 1's."""
    return m.rows("table2") or m.rows("table1")


def figure4_frame(m: Manifest, results: Path, metric: str) -> pd.DataFrame:
    """Long frame (series, method, kind, sampler, nfe, mean, ci95) of ``metric`` vs NFE.

    kind is "run" (each compared run over ``run_nfe`` under its declared sampler; every file required), "base"
    (the base model under its declared sampler, the ODE, at the same NFEs, where evaluated), "base_ref" (the base
    at its largest Table-1 NFE beyond ``run_nfe`` with that sampler, e.g. 28: a reference line) or "baseline" (an
    evaluation-only model at its NFEs inside the ``run_nfe`` range, through its own pipeline).
    """
    rows = []

    def add(label: str, kind: str, sampler: str, nfe: int, st) -> None:
        series = label if kind == "baseline" else f"{label} ({sampler})"
        rows.append({"series": series, "method": label, "kind": kind, "sampler": sampler, "nfe": nfe,
                     "mean": st.mean, "ci95": st.ci95})

    for label, run in figure_rows(m):
        sampler = m.declared_sampler(run)
        for nfe in m.run_nfe:
            add(label, "run", sampler, nfe, run_eval_stats(results, m, run, nfe, "figure4", sampler=sampler)[metric])
    lo, hi = min(m.run_nfe, default=0), max(m.run_nfe, default=0)
    for name, (label, nfes, _) in m.baselines.items():
        for nfe in (n for n in nfes if lo <= n <= hi):
            add(label, "baseline", "pipeline", nfe, baseline_eval_stats(results, m, name, nfe, "figure4")[metric])
    base = m.base_sampler
    for nfe in (n for n in m.run_nfe if base_eval_path(results, base, n).is_file()):
        add(m.base_label, "base", base, nfe, base_eval_stats(results, m, base, nfe, "figure4")[metric])
    ref = [n for s, n in m.base_evals if s == base and n > hi and base_eval_path(results, base, n).is_file()]
    for nfe in sorted(ref)[-1:]:
        st = base_eval_stats(results, m, base, nfe, "figure4")[metric]
        rows.append({"series": f"{m.base_label} ({base.upper() if base == 'ode' else base}, {nfe} NFE)",
                     "method": m.base_label, "kind": "base_ref", "sampler": base, "nfe": nfe, "mean": st.mean,
                     "ci95": st.ci95})
    return pd.DataFrame(rows, columns=["series", "method", "kind", "sampler", "nfe", "mean", "ci95"])


_LINESTYLES = {"annealed": "-", "ode": "--", "pipeline": "-."}


def _plot_panel(ax, frame: pd.DataFrame, scale: float, ylabel: str, colors: dict[str, str]) -> None:
    """One panel: a line with a CI band per series (a model under its declared sampler), one colour per method
    and one line style per sampler (annealed solid, ODE dashed); the base reference as a black dashed horizontal
    line."""
    for i, (label, pts) in enumerate(frame[frame["kind"] != "base_ref"].groupby("series", sort=False)):
        pts = pts.sort_values("nfe")
        mean, ci = pts["mean"] * scale, pts["ci95"].fillna(0.0) * scale
        sampler, method = pts["sampler"].iloc[0], pts["method"].iloc[0]
        line, = ax.plot(pts["nfe"], mean, marker=_MARKERS[i % len(_MARKERS)], markersize=4, label=label,
                        color=colors[method], linestyle=_LINESTYLES.get(sampler, ":"))
        ax.fill_between(pts["nfe"], mean - ci, mean + ci, color=line.get_color(), alpha=0.12, linewidth=0)
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
    methods = list(dict.fromkeys(x for f in frames.values() for x in f["method"]))
    palette = [c for c in plt.rcParams["axes.prop_cycle"].by_key()["color"]]
    colors = {x: "0.4" if x == m.base_label else palette[i % len(palette)] for i, x in enumerate(methods)}
    fig, axes = plt.subplots(1, len(frames), figsize=(4.6 * len(frames), 4.0), squeeze=False)
    for ax, (key, frame) in zip(axes[0], frames.items()):
        _plot_panel(ax, frame, metric_format(m, key)[0], metric_header(m, key), colors)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=7, frameon=False)
    n = len(m.seeds)
    band = (f"95 % CI over {n} seeds (Student t)" if n > 1 else "the evaluation's 95 % CI over test images (one seed)")
    world = f" ({m.caption_prefix.removesuffix(' analogue of').lower()} world)" if m.caption_prefix else ""
    fig.suptitle(f"Figure 4{world}: quality vs NFE; bands: {band}", fontsize=9)
    rows = -(-len(labels) // 3)
    fig.tight_layout(rect=(0, 0.03 + 0.045 * rows, 1, 1))
    out_png = Path(out_png)
    for path, fmt in ((out_png, "png"), (out_png.with_suffix(".pdf"), "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
    plt.close(fig)
    ref = frames[metric].loc[frames[metric]["kind"] == "base_ref", "nfe"]
    ref_note = (f"; the black dashed line is the base model with its {m.base_sampler} sampler at {int(ref.iloc[0])} NFE"
                if len(ref) else "")
    lead = f"{m.caption_prefix} Figure 4" if m.caption_prefix else "Figure 4"
    return (f"{lead} (quality across inference steps): {', '.join(m.label(k) for k in frames)} "
            f"vs NFE for each compared method and the base model, each under the sampler its method declares (the "
            f"annealed chain for annealed-chain methods, the Euler ODE for SDE-trained ones and the base; never chosen "
            f"by a test metric; one colour per model, annealed chain solid, ODE dashed); bands are {band}{ref_note}.")
