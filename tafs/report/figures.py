"""Figure 4: a metric vs NFE per Table-1 model (mean over seeds with 95 % CI bands), from results/grid.json."""

from __future__ import annotations

from pathlib import Path

from tafs.io import atomic_path

# --------------------------------------------------------------------------- Figure 4 from the grid manifest

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _plot_panel(ax, frame, scale: float, ylabel: str, markers: dict[str, str]) -> None:
    """One panel: a line with a CI band per series; the base reference as a dashed horizontal line."""
    for label, pts in frame[frame["kind"] != "base_ref"].groupby("series", sort=False):
        pts = pts.sort_values("nfe")
        mean, ci = pts["mean"] * scale, pts["ci95"].fillna(0.0) * scale
        style = dict(linestyle=":", color="0.35") if (pts["kind"] == "base").all() else {}
        line, = ax.plot(pts["nfe"], mean, marker=markers[label], markersize=5, label=label, **style)
        ax.fill_between(pts["nfe"], mean - ci, mean + ci, color=line.get_color(), alpha=0.15, linewidth=0)
    for _, ref in frame[frame["kind"] == "base_ref"].iterrows():
        ax.axhline(ref["mean"] * scale, color="k", linestyle="--", linewidth=1, label=ref["series"])
    ticks = sorted(frame.loc[frame["kind"] != "base_ref", "nfe"].unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("NFE (sampling steps)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def figure4_grid(grid, results: Path, out_png: Path, metric: str = "correct",
                 second: str | None = "dense") -> str:
    """Figure 4 from a grid manifest (``tafs.report.paper_tables.Grid``): metric vs NFE per Table-1 run.

    A second panel shows ``second`` when it differs from ``metric`` and has data. Writes
    ``out_png`` and a PDF beside it atomically; returns a one-sentence caption.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tafs.report.paper_tables import figure4_frame, metric_format, metric_header

    frames = {metric: figure4_frame(grid, Path(results), metric)}
    if second and second != metric:
        extra = figure4_frame(grid, Path(results), second)
        if extra["mean"].notna().any():
            frames[second] = extra
    series = list(dict.fromkeys(s for f in frames.values() for s in f["series"]))
    markers = {s: _MARKERS[i % len(_MARKERS)] for i, s in enumerate(series)}
    fig, axes = plt.subplots(1, len(frames), figsize=(4.2 * len(frames), 3.6), squeeze=False)
    for ax, (m, frame) in zip(axes[0], frames.items()):
        _plot_panel(ax, frame, metric_format(m)[0], metric_header(grid, m), markers)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    n = len(grid.seeds)
    band = (f"95 % CI over {n} seeds (Student t)" if n > 1 else "the evaluation's 95 % CI over test images (one seed)")
    fig.suptitle(f"Figure 4 (toy world): quality vs NFE; bands: {band}", fontsize=9)
    rows = -(-len(labels) // 4)
    fig.tight_layout(rect=(0, 0.03 + 0.05 * rows, 1, 1))
    out_png = Path(out_png)
    for path, fmt in ((out_png, "png"), (out_png.with_suffix(".pdf"), "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
    plt.close(fig)
    ref = frames[metric].loc[frames[metric]["kind"] == "base_ref", "nfe"]
    ref_note = f"; the dashed line is the base model with the ODE sampler at {int(ref.iloc[0])} NFE" if len(ref) else ""
    return (f"Toy analogue of Figure 4 (quality across inference steps): {', '.join(grid.label(m) for m in frames)} "
            f"vs NFE for each method with its evaluation sampler and the base model with the ODE sampler "
            f"(where evaluated); bands are {band}{ref_note}.")
