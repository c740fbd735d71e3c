"""The grid manifest (``results/manifest.json``) as the report reads it: seeds, NFEs, the task's metrics and
categories, the models, the runs and each table's rows."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tafs.grid import RunSpec
from tafs.io import read_json


@dataclass(frozen=True)
class Manifest:
    seeds: tuple[int, ...]
    run_nfe: tuple[int, ...]
    main_nfe: int
    table1_nfe: tuple[int, ...]
    base_label: str
    base_evals: tuple[tuple[str, int], ...]
    metrics_in: tuple[str, ...]
    metrics_out: tuple[str, ...]
    metric_labels: dict[str, str]
    percent: frozenset[str]  # metrics shown in %
    categories: tuple[str, ...]
    category_metric: str | None
    category_label: str
    caption_prefix: str  # "Toy analogue of" / "" before "Table N" in captions
    figure_metrics: tuple[str, str | None]  # Figure 4's main metric and its second panel
    runs: dict[str, RunSpec]
    tables: dict[str, Any]
    # name -> (label, NFEs evaluated (Figure 4), NFEs shown in Table 1)
    baselines: dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    samplers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "base" / run -> samplers evaluated
    base_sampler: str = "ode"  # the base model's declared sampler (Table 2's base row, Figure 4's base line)
    table1: "Manifest | None" = None  # Table 1's view when it has a task of its own (its domains)
    run_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)  # run -> its seeds, where not ``seeds``

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.metrics_in + self.metrics_out

    def rows(self, table: str) -> list[tuple[str, str]]:
        """``(label, run)`` pairs of a table; empty when the manifest lists none."""
        return [(str(label), str(run)) for label, run in (self.tables.get(table) or [])]

    def run(self, name: str, need: str) -> RunSpec:
        if name not in self.runs:
            raise KeyError(f"run {name!r} (needed by {need}) is not in the grid manifest's 'runs'")
        return self.runs[name]

    def seeds_of(self, run: str) -> tuple[int, ...]:
        """The training seeds of a run (ablation-only rows may have fewer: ``ablations.seeds``)."""
        return self.run_seeds.get(run, self.seeds)

    def samplers_of(self, model: str) -> tuple[str, ...]:
        """The samplers a model ("base" or a run) was evaluated with (a run's eval sampler if not listed)."""
        if model in self.samplers:
            return self.samplers[model]
        return (self.runs[model].eval_sampler,) if model in self.runs else ("ode",)

    def declared_sampler(self, model: str) -> str:
        """The sampler a model ("base" or a run) is reported with: its method's declared eval sampler (the base's:
        ``base_sampler``), never one chosen by a test metric."""
        return self.base_sampler if model == "base" else self.run(model, "its declared sampler").eval_sampler

    def for_table(self, table: str) -> "Manifest":
        """The manifest as ``table`` reads it: Table 1's own task view where there is one."""
        return self.table1 if table == "table1" and self.table1 is not None else self

    def label(self, metric: str) -> str:
        return self.metric_labels.get(metric, metric)

    def title(self, table: str) -> str:
        """"Toy analogue of Table 1" / "Table 1"."""
        name = table.replace("table", "Table ")
        return f"{self.caption_prefix} {name}" if self.caption_prefix else name


def read_required_json(path: Path, need: str) -> Any:
    """Read a JSON file; a missing one raises ``FileNotFoundError`` naming it and its consumer."""
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"missing file needed by {need}", str(path))
    return read_json(path)


def load_manifest(path: str | Path) -> Manifest:
    g = read_required_json(Path(path), "the paper tables (grid manifest)")
    task = g["task"]
    runs = {name: RunSpec(name, r.get("label", name), r["eval_sampler"], r.get("train", {}), task=r.get("task", ""))
            for name, r in g["runs"].items()}
    cat_metric = task.get("category_metric")
    labels = dict(g.get("metric_labels", {}))
    cat_label = task.get("category_label") or (f"{labels.get(cat_metric, cat_metric)} by category" if cat_metric
                                               else "")
    fig = g.get("figure4", {})
    m = Manifest(
        seeds=tuple(int(s) for s in g["seeds"]),
        run_nfe=tuple(int(n) for n in g["run_nfe"]),
        main_nfe=int(g["main_nfe"]),
        table1_nfe=tuple(int(n) for n in g["table1_nfe"]),
        base_label=g["base"].get("label", "Base"),
        base_evals=tuple((str(s), int(n)) for s, n in g["base"]["evals"]),
        metrics_in=tuple(g["metrics"]["in_domain"]),
        metrics_out=tuple(g["metrics"]["out_of_domain"]),
        metric_labels=labels,
        percent=frozenset(k for k, m in task["metrics"].items() if m.get("percent")),
        categories=tuple(task.get("categories") or ()),
        category_metric=cat_metric,
        category_label=cat_label,
        caption_prefix=task.get("caption_prefix", ""),
        figure_metrics=(fig.get("metric", "correct"), fig.get("second")),
        runs=runs,
        tables=dict(g.get("tables", {})),
        baselines={name: (b.get("label", name), tuple(int(n) for n in b["nfe"]),
                          tuple(int(n) for n in b.get("table_nfe") or b["nfe"]))
                   for name, b in (g.get("baselines") or {}).items()},
        samplers={m["name"]: tuple(m["samplers"]) for m in g.get("models", []) if m["kind"] in ("base", "run")},
        base_sampler=str(g["base"].get("sampler", "ode")),
        run_seeds={name: tuple(int(s) for s in seeds) for name, seeds in (g.get("run_seeds") or {}).items()},
    )
    t1 = g.get("table1_metrics")
    if t1 and (tuple(t1["in_domain"]), tuple(t1["out_of_domain"])) != (m.metrics_in, m.metrics_out):
        return replace(m, table1=replace(m, metrics_in=tuple(t1["in_domain"]), metrics_out=tuple(t1["out_of_domain"])))
    return m
