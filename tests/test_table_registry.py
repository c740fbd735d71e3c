"""The registry of the paper's tables (tafs.report.tables): one module per table, one registry line each, read by
write_all, the tables rule and the Snakemake report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dag_utils import REPO
from tafs.grid import build_grid
from tafs.report import paper_tables as pt
from tafs.report.manifest import Manifest, load_manifest
from tafs.report.table_model import Table, make_table, method_columns, metric_columns, sampler_columns
from tafs.report.tables import TABLES, TableDef, get_table, register
from tafs.report.tables.common import heading, sampler_rows
from test_paper_tables import make_tree

REPORT_CAPTIONS = REPO / "workflow" / "report"


def missing_report_captions(tables: dict[str, TableDef]) -> list[str]:
    """The registered tables without a Snakemake report caption (the tables rule names workflow/report/{name}.rst)."""
    return [name for name in tables if not (REPORT_CAPTIONS / f"{name}.rst").is_file()
            or not (REPORT_CAPTIONS / f"{name}.rst").read_text().strip()]


# --- an eighth table, as a module of tafs/report/tables/ would define it ------------------------------------------


def build_table8(m: Manifest, results: Path) -> Table:
    """The base and Table 3's runs at ``main_nfe``, under their declared samplers."""
    keys = list(m.metrics)
    rows = sampler_rows(m, results, "base", m.main_nfe, "table8",
                        {"method": m.base_label, "run": "base", "n_seeds": None}, keys)
    for label, run in m.rows("table3"):
        rows += sampler_rows(m, results, run, m.main_nfe, "table8",
                             {"method": label, "run": run, "n_seeds": len(m.seeds_of(run))}, keys)
    columns = method_columns() + sampler_columns() + metric_columns(m)
    caption = f"{m.title('table8')} (the base next to Table 3's runs) at {m.main_nfe} NFE."
    return make_table("table8", rows, columns, caption, heading(m, "table8"), shown="declared")


TABLE8 = TableDef("table8", "the base next to Table 3's runs", build_table8, reads=("table3",))


# --- the registry --------------------------------------------------------------------------------------------------


def test_registry_lists_tables_1_to_7_in_order_and_the_old_names_are_theirs():
    assert list(TABLES) == [f"table{i}" for i in range(1, 8)] == list(pt.TABLE_IDS)
    assert all(name == t.name and t.description and t.reads for name, t in TABLES.items())
    assert pt.table3 is TABLES["table3"].build and get_table("table7") is TABLES["table7"]
    with pytest.raises(KeyError, match="registered: table1, table2"):
        get_table("table99")
    with pytest.raises(ValueError, match="registered twice"):
        register(TABLES["table3"])


def test_every_registered_table_has_a_report_caption(monkeypatch):
    assert missing_report_captions(TABLES) == []
    monkeypatch.setitem(TABLES, TABLE8.name, TABLE8)  # a table added without its .rst is caught
    assert missing_report_captions(TABLES) == ["table8"]


def test_the_rows_each_table_reads_are_rows_the_grid_builds():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    built = set(build_grid(config).tables)
    assert {key for t in TABLES.values() for key in t.reads} <= built, built


def test_the_tables_rule_reads_the_registry():
    rule = (REPO / "workflow" / "rules" / "report.smk").read_text()
    assert "from tafs.report.tables import TABLES" in rule and "range(1, 8)" not in rule


def test_adding_a_table_is_one_module_and_a_registry_line(tmp_path, monkeypatch):
    root = make_tree(tmp_path, seeds=[0, 1])
    monkeypatch.setitem(TABLES, TABLE8.name, TABLE8)  # the registry line (undone after the test)
    out = root / "tables"
    tables = pt.write_all(root / "manifest.json", root, out, None)
    assert list(tables) == [f"table{i}" for i in range(1, 9)]
    for suffix in ("csv", "md", "tex"):
        assert (out / f"table8.{suffix}").stat().st_size > 0
    data = pd.read_csv(out / "table8.csv")
    assert list(data["run"]) == ["base", "tafs_grpo", "no_step_adv"]
    assert list(data["sampler"]) == ["ode", "annealed", "annealed"]
    caption = "Toy analogue of Table 8 (the base next to Table 3's runs) at 8 NFE."
    assert json.loads((out / "captions.json").read_text())["table8"] == caption
    md = (out / "table8.md").read_text()
    assert md.startswith(f"**Table 8 (toy analogue).** {caption}") and "| - w/o Step Adv. | annealed" in md
    assert "TAFS-GRPO & annealed" in (out / "table8.tex").read_text()


def test_write_all_passes_each_table_the_options_it_names(tmp_path):
    root = make_tree(tmp_path, seeds=[0, 1])
    tables = pt.write_all(root / "manifest.json", root, root / "tables", None, reference="flow_grpo")
    assert "Time vs Flow-GRPO" in tables["table2"].caption
    assert tables["table2"].data.set_index("run").loc["flow_grpo", "time_vs_ref"] == pytest.approx(1.0)
    assert "Time vs TAFS-GRPO" in pt.table2(load_manifest(root / "manifest.json"), root).caption
