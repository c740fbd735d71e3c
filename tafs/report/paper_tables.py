"""The paper's Tables 1-7 (and, through ``tafs.report.figures``, Figure 4) from the grid manifest: ``write_all``
and the ``tafs tables`` CLI over the registry of tables (``tafs.report.tables.TABLES``, one module per table).

The manifest (``results/manifest.json``, written by ``tafs.grid``) names the task's metrics and categories,
the seeds, the NFEs and, per table, its rows as ``[label, run]`` pairs. Every number is read from the
per-run files of the results layout (``tafs.paths``) through ``tafs.report.results``; each table is
written as ``table{N}.csv`` / ``.md`` / ``.tex`` plus ``captions.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tafs.io import write_json
from tafs.report.manifest import Manifest, load_manifest
from tafs.report.results import unscored
from tafs.report.table_model import Table, write_table
from tafs.report.tables import TABLES
from tafs.report.tables.common import ablation_table, reference_run, sampler_note, sampler_rows

# The names callers and tests use (``pt.table3(m, results)``, ``pt.sampler_rows``, ``pt.write_table``): the
# tables live in ``tafs.report.tables``, one module each, listed by its registry ``TABLES``.
__all__ = ["TABLE_IDS", "ablation_table", "build_parser", "build_tables", "main", "reference_run", "sampler_note",
           "sampler_rows", "table1", "table2", "table3", "table4", "table5", "table6", "table7", "unscored_note",
           "write_all", "write_table"]
TABLE_IDS = tuple(TABLES)  # the tables registered at import (write_all reads TABLES itself)
table1 = TABLES["table1"].build
table2 = TABLES["table2"].build
table3 = TABLES["table3"].build
table4 = TABLES["table4"].build
table5 = TABLES["table5"].build
table6 = TABLES["table6"].build
table7 = TABLES["table7"].build


def build_tables(m: Manifest, results: Path, reference: str | None = None) -> dict[str, Table]:
    """Every registered table, in registry order; each gets the options it names (Table 2: ``reference``)."""
    options: dict[str, Any] = {"reference": reference_run(m, reference)}
    tables = {}
    for name, spec in TABLES.items():
        table = spec.build(m, results, **{k: options[k] for k in spec.options})
        if table.name != name:
            raise ValueError(f"table {name!r} (tafs.report.tables.TABLES) built a table named {table.name!r}")
        tables[name] = table
    return tables


def unscored_note(m: Manifest, results: Path) -> str:
    """" Unscored images ..." when a reward could not score some evaluation images (else "")."""
    counts = unscored(results)
    if not counts:
        return ""
    parts = [f"{m.label(k)} {bad} of {n}" for k, (bad, n) in counts.items()]
    return (f" Images a reward could not score (e.g. no parsable answer), left out of the means: {', '.join(parts)} "
            "over all evaluations; '-' where none could be scored.")


# --------------------------------------------------------------------------- entry point


def write_all(grid_path: Path, results: Path, out_dir: Path, figure: Path | None,
              metric: str | None = None, reference: str | None = None) -> dict[str, Table]:
    """Every registered table (``tafs.report.tables.TABLES``: csv/md/tex) and ``captions.json`` under ``out_dir``;
    Figure 4 at ``figure``."""
    m = load_manifest(grid_path)
    tables = build_tables(m, results, reference)
    note = unscored_note(m, results)
    for table in tables.values():
        table.caption += note
        write_table(table, out_dir)
    captions = {name: t.caption for name, t in tables.items()}
    if figure is not None:
        from tafs.report.figures import figure4

        main, second = m.figure_metrics
        captions["figure4"] = figure4(m, results, figure, metric or main, second)
    write_json(out_dir / "captions.json", captions)
    return tables


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tafs tables", description="The paper's Tables 1-7 and Figure 4 from manifest.json")
    p.add_argument("--manifest", default="results/manifest.json", help="grid manifest (manifest.json)")
    p.add_argument("--results", default="results", help="results root holding runs/ and eval/")
    p.add_argument("--out", default="results/tables", help="folder for table{1..7}.{csv,md,tex} and captions.json")
    p.add_argument("--figure", default="results/figures/figure4.png",
                   help="Figure 4 PNG path (a PDF is written beside it); 'none' to skip")
    p.add_argument("--metric", default=None, help="Figure 4's main metric (default: the manifest's figure4.metric)")
    p.add_argument("--reference", default=None,
                   help="run whose time per iteration Table 2's 'Time vs' column divides by "
                        "(default: the manifest's table7 run, else tafs_grpo)")
    return p


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    figure = None if str(a.figure).lower() == "none" else Path(a.figure)
    write_all(Path(a.manifest), Path(a.results), Path(a.out), figure, a.metric, a.reference)


if __name__ == "__main__":
    main()
