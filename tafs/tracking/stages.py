"""Discovery: a results folder (``tafs.paths.Layout``) -> the stage instances to mirror into MLflow.

The runs are nested the way a researcher compares them: every model is a top-level run (``model/base``, each
``train/<run>/seed<S>``, each ``model/baselines/<name>``) holding its evaluation runs (one per sampler and NFE);
``report`` holds the tables, Figure 4 and the report; ``config`` and each other model the DAG built (``model/<name>``,
e.g. the toy scorer) stand beside them. Tags (``method``, ``label``, ``seed``, ``sampler``, ``nfe``, ``model_kind``)
make "method = X and nfe = 8" a filter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tafs.hashing import canonical_json
from tafs.io import read_json, read_jsonl
from tafs.paths import EvalEntry, Layout, ModelRef
from tafs.tracking.payload import (MAX_TAG_VAL_LENGTH, Payload, Stage, param_str, mtime_ms, stage_times, clean_key,
                                   is_number, numeric_leaves, params_from, scalar_infos)


def config_stage(config: dict[str, Any]) -> Stage:
    """The effective config as a run: full config as params and as a ``config.json`` artifact.

    A run rather than an experiment tag because tag values are capped (20 000 chars for experiment
    tags) and a run shows the config both as searchable params and as a downloadable file.
    """

    def build(scratch: Path) -> Payload:
        tmp = scratch / "config.json"
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
        return Payload(params=params_from(config), artifacts=[(tmp, None)])

    return Stage("config", "config", [], build, extra_fingerprint=canonical_json(config))


def model_stage(key: str, name: str, path: Path | None, tags: dict[str, str]) -> Stage:
    """A model's own run (the base, a baseline): what made it (the metrics of the DAG's build of it) when known."""
    if path is not None and path.is_file():
        stage = json_stage(key, "model", path)
        stage.tags, stage.name = tags, name
        return stage
    return Stage(key, "model", [], lambda _scratch: Payload(), tags=tags, extra_fingerprint=key, name=name)


def json_stage(key: str, rule: str, path: Path) -> Stage:
    """A stage that wrote one flat-ish metrics JSON (a model the DAG built: e.g. pretraining, a learned scorer)."""

    def build(_scratch: Path) -> Payload:
        data = read_json(path)
        config = data.get("config") if isinstance(data.get("config"), dict) else {}
        params = {**scalar_infos(data), **params_from(config)}
        metrics = [(k, v, 0) for k, v in numeric_leaves(data).items()]
        metrics += [
            (clean_key(k), float(x), i)
            for k, v in data.items()
            if k != "config" and isinstance(v, list) and all(is_number(x) for x in v)
            for i, x in enumerate(v)
        ]
        start, end = stage_times(path, data.get("wall_s"))
        return Payload(params=params, metrics=metrics, artifacts=[(path, None)], start_ms=start, end_ms=end)

    return Stage(key, rule, [path], build)


def training_curves(rows: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per-iteration numeric fields; a repeated iteration (a resumed run) keeps its last row."""
    by_iter: dict[int, dict[str, float]] = {}
    for row in rows:
        it = row.get("iteration")
        if not is_number(it):
            continue
        by_iter[int(it)] = {clean_key(k): float(v) for k, v in row.items() if k != "iteration" and is_number(v)}
    return by_iter


def train_stage(run: str, seed: int, folder: Path, label: str | None = None) -> Stage:
    summary = folder / "train_summary.json"
    curves = folder / "metrics.jsonl"

    def build(_scratch: Path) -> Payload:
        data = read_json(summary)
        config = data.get("config") if isinstance(data.get("config"), dict) else {}
        by_iter = training_curves(read_jsonl(curves)) if curves.exists() else {}
        metrics = [(k, v, it) for it, row in sorted(by_iter.items()) for k, v in row.items()]
        curve_keys = {k for row in by_iter.values() for k in row}
        # A final value whose name is also a curve (nfe_old...) would splice into that curve's history.
        for k, v in numeric_leaves(data).items():
            metrics.append((f"summary/{k}" if k in curve_keys else k, v, 0))
        params = {**scalar_infos(data), **params_from(config)}
        start, end = stage_times(summary, data.get("wall_s"))
        artifacts = [(p, None) for p in (summary, curves) if p.exists()]
        return Payload(params=params, metrics=metrics, artifacts=artifacts, start_ms=start, end_ms=end,
                       curves=curve_keys)

    key = f"train/{run}/seed{seed}"
    sources = [p for p in (summary, curves) if p.exists()]
    tags = {"method": run, "label": label or run, "seed": str(seed), "model_kind": "run"}
    return Stage(key, "train", sources, build, tags=tags, name=f"{label or run} · seed {seed}")


def eval_metrics(data: dict[str, Any]) -> list[tuple[str, float, int]]:
    """``<m>``, ``<m>_ci95``, ``<m>/<cat>``, ``<m>/<cat>_ci95``, ``chance/<m>``, ``n``, ``wall_s``."""
    out: dict[str, float] = {}
    for name, m in (data.get("metrics") or {}).items():
        if not isinstance(m, dict):
            continue
        name = clean_key(name)
        if is_number(m.get("mean")):
            out[name] = float(m["mean"])
        if is_number(m.get("ci95")):
            out[f"{name}_ci95"] = float(m["ci95"])
        for cat, c in (m.get("by_category") or {}).items():
            if isinstance(c, dict) and is_number(c.get("mean")):
                out[clean_key(f"{name}/{cat}")] = float(c["mean"])
                if is_number(c.get("ci95")):
                    out[clean_key(f"{name}/{cat}_ci95")] = float(c["ci95"])
    for name, v in (data.get("chance") or {}).items():
        if is_number(v):
            out[clean_key(f"chance/{name}")] = float(v)
    for name in ("n", "wall_s"):
        if is_number(data.get(name)):
            out[name] = float(data[name])
    return [(k, v, 0) for k, v in out.items()]


def eval_stage(key: str, rule: str, folder: Path, tags: dict[str, str]) -> Stage:
    path = folder / "metrics.json"
    grid = folder / "samples.png"

    def build(_scratch: Path) -> Payload:
        data = read_json(path)
        config = data.get("config") if isinstance(data.get("config"), dict) else {}
        params = params_from(config)
        params.update({k: param_str(data[k]) for k in ("sampler", "nfe", "model", "model_commit") if k in data})
        start, end = stage_times(path, data.get("wall_s"))
        artifacts = [(p, None) for p in (grid, path) if p.exists()]
        return Payload(
            params=params,
            metrics=eval_metrics(data),
            tags={"model": str(data.get("model", ""))[:MAX_TAG_VAL_LENGTH]},
            artifacts=artifacts,
            start_ms=start,
            end_ms=end,
        )

    sources = [p for p in (path, grid) if p.exists()]
    return Stage(key, rule, sources, build, tags=tags)


def report_stage(layout: Layout) -> Stage | None:
    """Tables, figures and report.html as artifacts of one ``report`` run (None when none exist)."""
    files: list[tuple[Path, str | None]] = []
    for folder in (layout.tables_dir, layout.figure("figure4").parent):
        if folder.is_dir():
            for f in sorted(folder.rglob("*")):
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(folder).parts):
                    files.append((f, f.relative_to(layout.root).parent.as_posix()))
    if layout.report_html.is_file():
        files.append((layout.report_html, None))
    if not files:
        return None

    def build(_scratch: Path) -> Payload:
        end = max(mtime_ms(f) for f, _ in files)
        return Payload(artifacts=files, start_ms=end, end_ms=end)

    return Stage("report", "report", [f for f, _ in files], build, name="report: Tables 1-7, Figure 4")


def model_key(model: ModelRef) -> str:
    """The key of a model's own run: the training run of a trained model, ``model/<...>`` otherwise."""
    return f"train/{model.name}/seed{model.seed}" if model.kind == "run" else f"model/{model.key}"


def eval_entry_stage(entry: EvalEntry, labels: dict[str, str] | None = None) -> Stage:
    """An evaluation point of any model (base, run at a seed, baseline), nested under the model's run."""
    model = entry.model
    label = (labels or {}).get(model.name, model.name if model.kind != "base" else "Base")
    tags = {"model_kind": model.kind, "label": label, "sampler": entry.sampler, "nfe": str(entry.nfe)}
    if model.kind == "run":
        tags.update(method=model.name, seed=str(model.seed))
    elif model.kind == "baseline":
        tags.update(baseline=model.name)
    rule = "eval_run" if model.kind == "run" else f"eval_{model.kind}"
    stage = eval_stage(f"eval/{model.key}/{entry.sampler}/nfe{entry.nfe}", rule, entry.folder, tags)
    seed = f" · seed {model.seed}" if model.kind == "run" else ""
    stage.parent, stage.name = model_key(model), f"{label}{seed} · {entry.sampler} · {entry.nfe} NFE"
    return stage


def model_stages(layout: Layout, models: list[ModelRef], labels: dict[str, str]) -> list[Stage]:
    """The own runs of the base and of evaluation-only models (trained models' runs are their training runs)."""
    out: dict[str, Stage] = {}
    for m in models:
        if m.kind == "base":
            built = dict(layout.build_metrics()).get(layout.base_model.name)  # how the DAG built it, if it did
            out["base"] = model_stage("model/base", "Base model", built, {"model_kind": "base", "label": "Base"})
        elif m.kind == "baseline":
            label = labels.get(m.name, m.name)
            out[m.key] = model_stage(f"model/{m.key}", label, None,
                                     {"model_kind": "baseline", "baseline": m.name, "label": label})
    return [out[k] for k in sorted(out)]


def labels_of(layout: Layout) -> dict[str, str]:
    """Run and baseline labels from manifest.json (names as they are when it does not exist yet)."""
    if not layout.manifest_json.is_file():
        return {}
    g = read_json(layout.manifest_json)
    out = {name: r.get("label", name) for name, r in (g.get("runs") or {}).items()}
    out.update({name: b.get("label", name) for name, b in (g.get("baselines") or {}).items()})
    return out


def discover(results: Path, config: dict[str, Any]) -> list[Stage]:
    """All stage instances present in ``results/``, parents before their children."""
    layout, labels = Layout(results), labels_of(Layout(results))
    stages = [config_stage(config)]
    stages += [json_stage(f"model/{name}", "build_model", path) for name, path in layout.build_metrics()
               if name != layout.base_model.name]  # the base's is its model run's (model_stages)
    evals = list(layout.finished_evals())
    stages += model_stages(layout, [ModelRef.base()] + [e.model for e in evals if e.model.kind == "baseline"], labels)
    stages += [train_stage(run, seed, folder, labels.get(run)) for run, seed, folder in layout.finished_runs()]
    stages += [eval_entry_stage(entry, labels) for entry in evals]
    report = report_stage(layout)
    if report is not None:
        stages.append(report)
    return stages
