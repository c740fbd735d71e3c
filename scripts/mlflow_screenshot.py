"""Open a results folder's MLflow experiment in headless Chromium: check that it lists the runs, save a screenshot.

    .venv/bin/python scripts/mlflow_screenshot.py --results results/smoke

Starts ``mlflow ui`` on ``<results>/mlflow.db`` (written by the DAG's ``mlflow_ingest``), opens the experiment
page as a user clicking on it would, and checks in the rendered page that it shows the runs table (the names
of the top-level runs), not MLflow 3's GenAI overview ("Traces"). Writes ``docs/mlflow-ui.png`` and
``docs/mlflow-ui-check.txt`` (what was checked, and the result). MLflow 3's UI opens every experiment in its
GenAI view unless the URL says ``?workflowType=machine_learning`` (or the user has clicked "Model training"
once in that browser): the link the ingest prints carries it. Needs Playwright (``pip install -e .[docs]``)
driving Chromium (Debian: ``apt-get install chromium``; ``--chromium`` names another binary; no browser
download). Exits non-zero when the check fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tafs.distributed import free_port
from tafs.tracking.ingest import ui_page


def start_ui(db: Path, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", f"sqlite:///{db.resolve()}", "--host",
                             "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("error: mlflow ui did not start")


def render(binary: str, url: str, expand: str, out: Path) -> str:
    """The page's text after it has loaded, with the run ``expand`` opened to show its children; a screenshot."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(url)
        page.get_by_text("matching runs").wait_for(timeout=60_000)
        for name in ("Close", "Got it"):  # side panels and tips that cover the table
            for button in page.get_by_role("button", name=name).all():
                if button.is_visible():
                    button.click()
        row = page.get_by_role("row").filter(has_text=expand)
        row.get_by_role("button").first.click()  # the row's expander: its evaluation runs appear below it
        page.wait_for_timeout(2000)
        page.screenshot(path=str(out))
        text = page.inner_text("body")
        browser.close()
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results/smoke", help="a results folder with mlflow.db")
    p.add_argument("--out", default="docs/mlflow-ui.png")
    p.add_argument("--check-out", default="docs/mlflow-ui-check.txt")
    p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    a = p.parse_args()
    db = Path(a.results) / "mlflow.db"
    if not db.is_file():
        raise SystemExit(f"error: {db} not found; run the DAG first (its mlflow_ingest stage writes it)")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db.resolve()}")
    exp = next(e for e in client.search_experiments() if e.name.startswith("tafs-"))
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    tops = [r.info.run_name for r in runs if "mlflow.parentRunId" not in r.data.tags]
    main = next(r for r in runs if r.data.tags.get("tafs.key", "").startswith("train/tafs_grpo/seed"))
    children = [r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == main.info.run_id]
    port = free_port()
    proc = start_ui(db, port)
    try:
        url = f"http://127.0.0.1:{port}/{ui_page(exp.experiment_id)}"
        text = render(a.chromium, url, main.info.run_name, Path(a.out).resolve())
    finally:
        os.killpg(proc.pid, 15)
    shown = [n for n in tops if n in text]
    nested = [n for n in children if n in text]
    ok = len(shown) >= min(3, len(tops)) and bool(nested) and "matching runs" in text
    lines = [f"command: python scripts/mlflow_screenshot.py --results {a.results}",
             f"page: /{ui_page(exp.experiment_id)} (experiment {exp.name}, "
             f"experimentKind={exp.tags.get('mlflow.experimentKind')})",
             f"top-level runs in the store: {len(tops)}; their names found in the rendered page: {len(shown)}",
             *[f"  shown: {n}" for n in shown],
             f"evaluation runs of '{main.info.run_name}' (expanded) in the page: {len(nested)} of {len(children)}",
             *[f"  shown: {n}" for n in nested],
             f"runs table ('matching runs') in the page: {'matching runs' in text}",
             f"screenshot: {a.out}",
             f"result: {'PASS' if ok else 'FAIL'}"]
    Path(a.check_out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
