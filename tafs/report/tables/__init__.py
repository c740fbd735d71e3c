"""The paper's tables, one module each (``table1`` ... ``table7``), and their registry.

A table module defines ``build(m, results) -> Table`` (its rows, columns and caption) and
``TABLE = TableDef(name, description, build, reads=...)``; one ``register`` line below adds it to ``TABLES``, in
report order. ``tafs.report.paper_tables.write_all`` writes every registered table (``{name}.csv`` / ``.md`` /
``.tex`` and its caption in ``captions.json``) and the ``tables`` rule of ``workflow/rules/report.smk`` declares
their files; the Snakemake report captions each with ``workflow/report/{name}.rst``. Shared pieces:
``tafs.report.tables.common``. Recipe: docs/architecture.md, "Add a table"."""

from __future__ import annotations

from tafs.report.tables import table1, table2, table3, table4, table5, table6, table7
from tafs.report.tables.common import TableDef

TABLES: dict[str, TableDef] = {}


def register(table: TableDef) -> TableDef:
    """Add ``table`` to ``TABLES`` (after those registered before it); a name may be registered once."""
    if table.name in TABLES:
        raise ValueError(f"table {table.name!r} is registered twice")
    TABLES[table.name] = table
    return table


def get_table(name: str) -> TableDef:
    """The registered table ``name``; a KeyError lists the registered ones."""
    if name not in TABLES:
        raise KeyError(f"no table {name!r} in tafs.report.tables.TABLES (registered: {', '.join(TABLES)})")
    return TABLES[name]


register(table1.TABLE)
register(table2.TABLE)
register(table3.TABLE)
register(table4.TABLE)
register(table5.TABLE)
register(table6.TABLE)
register(table7.TABLE)

__all__ = ["TABLES", "TableDef", "get_table", "register"]
