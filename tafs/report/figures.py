"""Figure 4: a metric vs NFE, one line per (model, sampler), with 95 % CI bands."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tafs.io import atomic_path, read_json

METRIC_LABELS = {"correct": "strict accuracy (GenEval-style)", "dense": "dense score"}


def load_curves(paths: list[Path], metric: str) -> dict[str, list[tuple[int, float, float]]]:
    curves: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for p in paths:
        m = read_json(p)
        stat = m["metrics"][metric]
        curves[f"{m['model']} ({m['sampler']})"].append((m["nfe"], stat["mean"], stat["ci95"]))
    return {k: sorted(v) for k, v in sorted(curves.items())}


def figure4(paths: list[Path], out_png: Path, metric: str = "correct") -> None:
    """Write ``out_png`` and a PDF beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = load_curves(paths, metric)
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in curves.items():
        nfe = [p[0] for p in pts]
        mean = [p[1] for p in pts]
        ci = [p[2] for p in pts]
        line, = ax.plot(nfe, mean, marker="o", label=label)
        ax.fill_between(nfe, [m - c for m, c in zip(mean, ci)], [m + c for m, c in zip(mean, ci)],
                        color=line.get_color(), alpha=0.2)
    ax.set_xscale("log", base=2)
    ticks = sorted({p[0] for pts in curves.values() for p in pts})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("NFE (sampling steps)")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Figure 4 (toy world): quality vs NFE, 95 % CI")
    fig.tight_layout()
    out_png = Path(out_png)
    for path, fmt in ((out_png, "png"), (out_png.with_suffix(".pdf"), "pdf")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
    plt.close(fig)
