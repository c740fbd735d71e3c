"""The GPU measurements ``tafs plan`` reads, shipped inside the package (``tafs/planning/data/gpu_measurements.json``,
package data in pyproject.toml): the planner needs no checkout of bench/.

``bench/iteration_time.py --backbone sd3-medium --record-plan`` on a CUDA machine records the rows of its run here
(one per method and GPU, replacing an older row of the same method, backbone and GPU); the planner reads the first
TAFS-GRPO row: its median seconds per iteration over its B x G samples (the training estimate) and the MFU of its
training passes (replacing the Table 2 calibration of ``tafs.planning.timing``). Until such a run, ``rows`` is empty and
the plan says so ("unmeasured").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tafs.io import write_json

MEASURED = Path(__file__).resolve().parent / "data" / "gpu_measurements.json"
METHOD = "tafs_grpo"
# The columns of a benchmark row that are kept (bench/iteration_time.py's CSV has many more).
KEPT = ("method", "backbone", "model", "device", "gpu", "dtype", "gradient_checkpointing", "latent", "text_tokens",
        "B", "G", "median_s", "time_sample_s", "time_opt_s", "mfu", "peak_mem_gib", "peak_tflops", "torch")


def load(path: Path = MEASURED) -> dict[str, Any]:
    """The measurements file ({"about": ..., "rows": [...]}); an absent file has no rows."""
    if not Path(path).exists():
        return {"rows": []}
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _cuda_rows(path: Path) -> list[dict[str, Any]]:
    return [r for r in load(path).get("rows", []) if r.get("method") == METHOD and "cuda" in str(r.get("device", ""))]


def _source(path: Path, row: dict[str, Any]) -> str:
    what = row.get("model") or row.get("backbone") or "?"
    return f"{Path(path).name} ({what}{', ' + row['gpu'] if row.get('gpu') else ''}"


def measured_seconds(path: Path = MEASURED) -> tuple[float, str] | None:
    """Seconds per sample of a TAFS-GRPO iteration measured on a CUDA GPU (median seconds / (B x G)), with where
    it comes from; None without a measurement."""
    for row in _cuda_rows(path):
        samples = int(row["B"]) * int(row["G"])
        return float(row["median_s"]) / samples, f"{_source(path, row)}, B x G {samples})"
    return None


def measured_mfu(path: Path = MEASURED) -> tuple[float, str] | None:
    """The model-FLOP utilisation of TAFS-GRPO's training passes measured on a CUDA GPU, if any: it replaces the
    Table 2 calibration."""
    for row in _cuda_rows(path):
        if row.get("mfu") not in (None, ""):
            return float(row["mfu"]), f"measured in {_source(path, row)})"
    return None


def _key(row: dict[str, Any]) -> tuple:
    return row.get("method"), row.get("backbone") or row.get("model"), row.get("gpu")


def record(rows: list[dict[str, Any]], path: Path = MEASURED) -> int:
    """Keep the CUDA rows of a benchmark run (its methods, not the compute-floor rows) in ``path``,
    replacing older rows of the same method, backbone and GPU; returns how many were recorded."""
    new = [{k: r[k] for k in KEPT if r.get(k) not in (None, "")} for r in rows
           if "cuda" in str(r.get("device", "")) and r.get("sampler") and r.get("median_s") not in (None, "")]
    if not new:
        return 0
    data = load(path)
    keys = {_key(r) for r in new}
    data["rows"] = [r for r in data.get("rows", []) if _key(r) not in keys] + new
    write_json(path, data)
    return len(new)
