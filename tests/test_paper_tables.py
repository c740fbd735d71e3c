"""Paper Tables 1-7 and Figure 4 from a fake results tree with known numbers."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from tafs.paths import Layout, ModelRef
from tafs.report import paper_tables as pt
from tafs.report.figures import figure4_frame
from tafs.report.manifest import Manifest, load_manifest
from tafs.report.table_model import to_markdown

CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
TASK = {"name": "toy_preference", "categories": list(CATEGORIES), "category_metric": "correct",
        "category_label": "strict acc. by category (%)", "caption_prefix": "Toy analogue of",
        "metrics": {"correct": {"reward": "toy_correct", "domain": "out", "label": "Strict acc.", "percent": True},
                    "dense": {"reward": "toy_dense", "domain": "in", "label": "Dense", "percent": True},
                    "clip": {"reward": "clip", "domain": "in", "label": "CLIP", "percent": False}}}

SEEDS = [0, 1, 2]
RUNS = {  # name -> (label, eval sampler, offset of every eval metric, base seconds per iteration)
    "tafs_grpo": ("TAFS-GRPO", "annealed", 0.0, 1.0),
    "flow_grpo": ("Flow-GRPO", "ode", -0.1, 2.0),
    "tafs_grpo-n_annealed1": ("TAFS-GRPO (N_annealed=1)", "annealed", -0.05, 0.5),
    "no_step_adv": ("w/o step adv", "annealed", -0.15, 0.9),
    "tafs_grpo-reward_clip_only": ("CLIP-only", "annealed", -0.02, 1.0),
}
NO_CLIP = {"flow_grpo"}  # its evaluations lack the "clip" metric: NaN cells
TABLES = {
    "table1": [["TAFS-GRPO", "tafs_grpo"], ["Flow-GRPO", "flow_grpo"]],
    "table2": [["Flow-GRPO", "flow_grpo"], ["TAFS-GRPO", "tafs_grpo"]],
    "table3": [["TAFS-GRPO", "tafs_grpo"], ["- w/o Step Adv.", "no_step_adv"]],
    "table4": [["1", "tafs_grpo-n_annealed1"], ["3", "tafs_grpo"]],
    "table5": [["1", "no_step_adv"], ["3", "tafs_grpo"]],
    "table6": [["CLIP-only", "tafs_grpo-reward_clip_only"], ["Combined", "tafs_grpo"]],
    "table7": "tafs_grpo",
}
EVAL_CI = 0.033  # every evaluation's own CI over test images
T975_2 = stats.t.ppf(0.975, 2)


def correct_value(offset: float, seed: int, nfe: int) -> float:
    """TAFS-GRPO at 8 NFE: 0.2, 0.4, 0.6 for seeds 0, 1, 2."""
    return 0.2 + offset + 0.2 * seed + 0.01 * (nfe - 8)


def eval_json(model: str, sampler: str, nfe: int, correct: float, with_clip: bool = True) -> dict:
    def stat(v: float) -> dict:
        return {"mean": v, "ci95": EVAL_CI, "n": 96}

    by_cat = {c: stat(correct + 0.01 * i) for i, c in enumerate(CATEGORIES)}
    metrics = {"correct": {**stat(correct), "by_category": by_cat},
               "dense": {**stat(correct + 0.1), "by_category": by_cat}}
    if with_clip:
        metrics["clip"] = {**stat(0.25 + correct / 10), "by_category": by_cat}
    return {"model": model, "sampler": sampler, "nfe": nfe, "n": 96, "metrics": metrics, "chance": {}, "wall_s": 1.0}


def pearson(reward: str, k: int, it: int, seed: int) -> float:
    return {"toy_dense": 0.6, "toy_clip": 0.7}[reward] + 0.2 * (k - 2) + 0.01 * it + 0.02 * seed


def write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_tree(root: Path, seeds: list[int] = SEEDS) -> Path:
    layout = Layout(root)
    grid = {
        "task": TASK, "figure4": {"metric": "correct", "second": "dense"},
        "seeds": seeds, "run_nfe": [4, 6, 8], "main_nfe": 8, "table1_nfe": [4, 8],
        "base": {"label": "Base", "evals": [["ode", 28], ["ode", 4], ["ode", 8], ["annealed", 4]]},
        "metrics": {"in_domain": ["dense", "clip"], "out_of_domain": ["correct"]},
        "metric_labels": {"correct": "Strict acc. (GenEval-like)", "dense": "Dense score (PickScore-like)",
                          "clip": "Toy CLIP score"},
        "runs": {n: {"label": lab, "eval_sampler": s, "train": {}} for n, (lab, s, _, _) in RUNS.items()},
        "tables": TABLES,
    }
    write(root / "manifest.json", grid)
    for sampler, nfe in [("ode", 28), ("ode", 4), ("ode", 6), ("ode", 8), ("annealed", 4)]:
        write(layout.eval_metrics(ModelRef.base(), sampler, nfe),
              eval_json("base", sampler, nfe, correct_value(-0.18, 0, nfe)))
    for run, (_, sampler, offset, sec) in RUNS.items():
        for seed in seeds:
            for nfe in (4, 6, 8):
                write(layout.eval_metrics(ModelRef.run(run, seed), sampler, nfe),
                      eval_json(run, sampler, nfe, correct_value(offset, seed, nfe), run not in NO_CLIP))
            nfe_old, nfe_theta = (4, 3) if "tafs" in run else (10, 6)
            write(layout.train_summary(run, seed),
                  {"iterations": 4, "wall_s": 1.0, "config": {}, "nfe_old": nfe_old, "nfe_theta": nfe_theta,
                   "sec_per_iter": sec + 0.1 * seed, "final_reward": {}})
            lines = []
            for it in range(4):
                row: dict = {"iteration": it}
                for reward in ("toy_dense", "toy_clip"):
                    for k in (2, 3, 4):
                        row[f"reward/{reward}/step{k}_mean"] = 0.5
                    for k in (2, 3):
                        row[f"reward/{reward}/step{k}_pearson_final"] = pearson(reward, k, it, seed)
                lines.append(json.dumps(row))
            extra = json.dumps({"iteration": 4, "reward/toy_dense/step2_pearson_final": None})  # r undefined
            path = layout.train_metrics(run, seed)
            path.write_text("\n".join(lines + [extra]) + '\n{"iteration": 5, "rew')  # + a partial last line
    return root


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Path]:
    root = make_tree(tmp_path_factory.mktemp("results"))
    out = root / "tables"
    pt.main(["--manifest", str(root / "manifest.json"), "--results", str(root), "--out", str(out),
             "--figure", str(root / "figures" / "figure4.png")])
    return root, out


def csv(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / f"{name}.csv")


def hand_ci(values: list[float]) -> float:
    s = pd.Series(values).std(ddof=1)
    return T975_2 * s / math.sqrt(len(values))


def test_every_table_file_and_captions(written):
    _, out = written
    for name in pt.TABLE_IDS:
        for suffix in ("csv", "md", "tex"):
            path = out / f"{name}.{suffix}"
            assert path.is_file() and path.stat().st_size > 0, path
    captions = json.loads((out / "captions.json").read_text())
    assert set(captions) == set(pt.TABLE_IDS) | {"figure4"}
    assert all("toy analogue" in c.lower() for c in captions.values())
    assert (out / "table1.md").read_text().startswith("**Table 1 (toy analogue).** Toy analogue of Table 1")
    assert "Student t" in captions["table3"]


def test_rows_and_columns(written):
    _, out = written
    t1 = csv(out, "table1")
    assert list(zip(t1["method"], t1["sampler"], t1["nfe"])) == [
        ("Base", "ode", 28), ("Base", "ode", 4), ("Base", "ode", 8), ("Base", "annealed", 4),
        ("TAFS-GRPO", "annealed", 4), ("TAFS-GRPO", "annealed", 8), ("Flow-GRPO", "ode", 4), ("Flow-GRPO", "ode", 8)]
    for key in ["dense", "clip", "correct"] + [f"correct_{c}" for c in CATEGORIES]:
        assert key in t1.columns and f"{key}_ci95" in t1.columns
    t2 = csv(out, "table2")
    assert list(t2["method"]) == ["Base", "Flow-GRPO", "TAFS-GRPO"]
    assert {"nfe_old", "nfe_theta", "sec_per_iter", "sec_per_iter_ci95", "time_vs_ref"} <= set(t2.columns)
    assert list(csv(out, "table3")["method"]) == ["TAFS-GRPO", "- w/o Step Adv."]
    t4 = csv(out, "table4")
    assert [str(x) for x in t4["method"]] == ["1", "3"] and list(t4["run"]) == ["tafs_grpo-n_annealed1", "tafs_grpo"]
    assert list(t4.columns[:7]) == ["method", "run", "n_seeds", "sampler", "declared", "sec_per_iter",
                                    "sec_per_iter_ci95"]
    assert [str(x) for x in csv(out, "table5")["method"]] == ["1", "3"]
    assert list(csv(out, "table6")["method"]) == ["CLIP-only", "Combined"]
    assert list(csv(out, "table7")["method"]) == ["R^2 with R^4", "R^3 with R^4"]
    md4 = (out / "table4.md").read_text()
    assert "| N_annealed" in md4 and "Time / iter (s)" in md4
    md2 = (out / "table2.md").read_text()
    assert "NFE_old / NFE_θ" in md2 and "4 / 3" in md2 and "10 / 6" in md2
    tex2 = (out / "table2.tex").read_text()
    assert r"\begin{tabular}" in tex2 and r"$\pm$" in tex2 and "±" not in tex2


def test_mean_ci_cell_matches_hand_computation(written):
    _, out = written
    row = csv(out, "table3").set_index("run").loc["tafs_grpo"]
    assert row["correct"] == pytest.approx(0.4)
    assert row["correct_ci95"] == pytest.approx(T975_2 * 0.2 / math.sqrt(3))
    cell = f"{40.0:.1f} ± {100 * T975_2 * 0.2 / math.sqrt(3):.1f}"
    assert cell in (out / "table3.md").read_text()
    assert cell.replace("±", r"$\pm$") in (out / "table3.tex").read_text()
    clip = 0.25 + row["correct"] / 10
    assert row["clip"] == pytest.approx(clip)
    assert f"{clip:.3f} ± " in (out / "table3.md").read_text()  # clip: 3 decimals, not %


def test_time_columns_and_missing_metric(written):
    _, out = written
    t2 = csv(out, "table2").set_index("run")
    assert t2.loc["tafs_grpo", "sec_per_iter"] == pytest.approx(1.1)
    assert t2.loc["tafs_grpo", "sec_per_iter_ci95"] == pytest.approx(hand_ci([1.0, 1.1, 1.2]))
    assert t2.loc["flow_grpo", "time_vs_ref"] == pytest.approx(2.1 / 1.1)
    assert t2.loc["tafs_grpo", "time_vs_ref"] == pytest.approx(1.0)
    assert math.isnan(t2.loc["base", "sec_per_iter"]) and math.isnan(t2.loc["flow_grpo", "clip"])
    assert t2.loc["base", "correct_ci95"] == pytest.approx(EVAL_CI)  # base: its evaluation's CI
    md = (out / "table2.md").read_text()
    base_line = next(line for line in md.splitlines() if line.startswith("| Base"))
    assert base_line.split("|")[2].strip() == "ode"  # the Sampler column
    assert base_line.split("|")[3].strip() == "-" and base_line.split("|")[4].strip() == "-"
    t1 = csv(out, "table1").set_index(["run", "nfe"])
    by_cat = [correct_value(0.0, s, 4) + 0.01 * CATEGORIES.index("position") for s in SEEDS]
    assert t1.loc[("tafs_grpo", 4), "correct_position"] == pytest.approx(sum(by_cat) / 3)
    assert t1.loc[("tafs_grpo", 4), "correct_position_ci95"] == pytest.approx(hand_ci(by_cat))


def test_table7_pearson_means(written):
    _, out = written
    t7 = csv(out, "table7").set_index("step")
    for reward in ("toy_dense", "toy_clip"):
        for k in (2, 3):
            per_seed = [sum(pearson(reward, k, it, s) for it in range(4)) / 4 for s in SEEDS]
            assert t7.loc[k, reward] == pytest.approx(sum(per_seed) / 3)
            assert t7.loc[k, f"{reward}_ci95"] == pytest.approx(hand_ci(per_seed))
    assert t7.loc[2, "toy_dense"] == pytest.approx(0.6 + 0.015 + 0.02)


def test_figure_files(written):
    root, _ = written
    for name in ("figure4.png", "figure4.pdf"):
        path = root / "figures" / name
        assert path.is_file() and path.stat().st_size > 1000, path


def test_figure4_frame(written):
    root, _ = written
    grid = load_manifest(root / "manifest.json")
    f = figure4_frame(grid, root, "correct")
    runs = f[f["kind"] == "run"]
    # Table 2's methods (the paper's Figure 4 compares them), each under its declared sampler
    assert list(runs["series"].unique()) == ["Flow-GRPO (ode)", "TAFS-GRPO (annealed)"]
    assert list(runs["nfe"].unique()) == [4, 6, 8]
    assert runs.set_index(["series", "nfe"]).loc[("TAFS-GRPO (annealed)", 8), "mean"] == pytest.approx(0.4)
    assert list(f.loc[f["kind"] == "base", "nfe"]) == [4, 6, 8]
    assert list(f.loc[f["kind"] == "base_ref", "nfe"]) == [28]


def test_one_seed_uses_eval_ci(tmp_path):
    root = make_tree(tmp_path, seeds=[1])
    grid = load_manifest(root / "manifest.json")
    t3 = pt.table3(grid, root).data.set_index("run")
    assert t3.loc["tafs_grpo", "correct"] == pytest.approx(0.4)
    assert t3.loc["tafs_grpo", "correct_ci95"] == pytest.approx(EVAL_CI)
    t4 = pt.table4(grid, root).data.set_index("run")
    assert t4.loc["tafs_grpo", "sec_per_iter"] == pytest.approx(1.1)
    assert math.isnan(t4.loc["tafs_grpo", "sec_per_iter_ci95"])
    assert "evaluation's 95 % CI over test images" in pt.table3(grid, root).caption
    t7 = pt.table7(grid, root).data.set_index("step")
    assert math.isnan(t7.loc[2, "toy_dense_ci95"])


def test_missing_file_names_path_and_consumer(tmp_path):
    root = make_tree(tmp_path, seeds=[0, 1])
    missing = Layout(root).eval_metrics(ModelRef.run("no_step_adv", 1), "annealed", 8)
    missing.unlink()
    with pytest.raises(FileNotFoundError) as err:
        pt.write_all(root / "manifest.json", root, root / "tables", None)
    text = str(err.value)
    assert str(missing) in text and "table3" in text and "no_step_adv" in text and "seed 1" in text
    (root / "runs" / "tafs_grpo" / "seed0" / "train_summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="train_summary.json"):
        pt.table2(load_manifest(root / "manifest.json"), root)


def test_empty_tables_still_written(tmp_path):
    root = make_tree(tmp_path, seeds=[0])
    grid = json.loads((root / "manifest.json").read_text())
    grid["tables"] = {"table1": [], "table3": [], "table7": None}
    (root / "manifest.json").write_text(json.dumps(grid))
    out = root / "tables"
    tables = pt.write_all(root / "manifest.json", root, out, None)
    assert len(tables["table3"].data) == 0 and len(tables["table7"].data) == 0
    assert list(tables["table2"].data["method"]) == ["Base"]
    assert all((out / f"{n}.{s}").is_file() for n in pt.TABLE_IDS for s in ("csv", "md", "tex"))


def test_module_entry_point():
    res = subprocess.run([sys.executable, "-m", "tafs.report.paper_tables", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--manifest" in res.stdout and "--figure" in res.stdout


def test_a_task_without_categories_or_prefix(tmp_path):
    """A task with no categories (Pick-a-Pic-like) and no caption prefix: no per-category columns, plain titles,
    percent only where the task says so."""
    root = make_tree(tmp_path, seeds=[0, 1])
    grid = json.loads((root / "manifest.json").read_text())
    grid["task"] = {**TASK, "categories": [], "category_metric": None, "caption_prefix": "",
                    "metrics": {**TASK["metrics"], "dense": {**TASK["metrics"]["dense"], "percent": False}}}
    (root / "manifest.json").write_text(json.dumps(grid))
    tables = pt.write_all(root / "manifest.json", root, root / "tables", None)
    assert not [c for c in tables["table1"].data.columns if c.startswith("correct_") and c != "correct_ci95"]
    md = (root / "tables" / "table3.md").read_text()
    assert md.startswith("**Table 3.** Table 3 (component ablation") and "Dense (%)" not in md and "Dense" in md


def _with_ode_evals_of_tafs(root: Path, bonus: float) -> Manifest:
    """tafs_grpo also evaluated with the ODE (not its declared sampler) and the base with the annealed chain (not
    its), each ``bonus`` better than the declared one on every metric."""
    layout = Layout(root)
    for seed in SEEDS:
        for nfe in (4, 6, 8):
            write(layout.eval_metrics(ModelRef.run("tafs_grpo", seed), "ode", nfe),
                  eval_json("tafs_grpo", "ode", nfe, correct_value(bonus, seed, nfe)))
    for nfe in (6, 8):  # the base's annealed chain, not its declared sampler, ``bonus`` better than its ODE
        write(layout.eval_metrics(ModelRef.base(), "annealed", nfe),
              eval_json("base", "annealed", nfe, correct_value(-0.18 + bonus, 0, nfe)))
    grid = json.loads((root / "manifest.json").read_text())
    grid["models"] = [{"kind": "base", "name": "base", "samplers": ["ode", "annealed"]},
                      {"kind": "run", "name": "tafs_grpo", "samplers": ["annealed", "ode"]}]
    grid["table1_metrics"] = {"task": "toy_composition", "in_domain": ["correct", "dense"], "out_of_domain": ["clip"]}
    write(root / "manifest.json", grid)
    return load_manifest(root / "manifest.json")


@pytest.mark.parametrize("bonus", [-0.05, 0.3])
def test_the_declared_sampler_is_shown_whatever_the_other_scores(tmp_path, bonus):
    """Done-when: making the other sampler's metrics much better (or worse) does not change which row md/tex show
    nor its numbers; the CSV keeps both rows and marks the declared one. Table 1 reads its own task's labels."""
    root = make_tree(tmp_path)
    pt.write_table(pt.table3(load_manifest(root / "manifest.json"), root), root / "before")
    m = _with_ode_evals_of_tafs(root, bonus)
    t3 = pt.table3(m, root)
    rows = t3.data[t3.data["run"] == "tafs_grpo"].set_index("sampler")
    assert rows.loc["ode", "correct"] == pytest.approx(0.4 + bonus)
    assert rows.loc["annealed", "correct"] == pytest.approx(0.4)
    assert bool(rows.loc["annealed", "declared"]) and not bool(rows.loc["ode", "declared"])
    pt.write_table(t3, root / "t")
    md = (root / "t" / "table3.md").read_text()
    tafs_lines = [x for x in md.splitlines() if x.startswith("| TAFS-GRPO")]
    assert len(tafs_lines) == 1 and tafs_lines[0].split("|")[2].strip() == "annealed"
    assert f"{40.0:.1f} ± " in tafs_lines[0] and f"{100 * (0.4 + bonus):.1f} ± " not in tafs_lines[0]
    before = (root / "before" / "table3.md").read_text().split("\n\n", 1)[1]  # the body, after the caption
    assert md.split("\n\n", 1)[1] == before  # the same rows and numbers as without the other sampler
    assert "declares" in t3.caption and "better" not in t3.caption and "declared = false" in t3.caption
    t2 = pt.table2(m, root).data
    base = t2[t2["run"] == "base"].set_index("sampler")
    assert list(base.index) == ["ode", "annealed"] and bool(base.loc["ode", "declared"])  # the base declares the ODE
    assert not bool(base.loc["annealed", "declared"])
    assert base.loc["annealed", "correct"] == pytest.approx(base.loc["ode", "correct"] + bonus)
    t1 = pt.table1(m, root).data
    tafs4 = t1[(t1["run"] == "tafs_grpo") & (t1["nfe"] == 4)].set_index("sampler")
    assert bool(tafs4.loc["annealed", "declared"]) and not bool(tafs4.loc["ode", "declared"])
    assert t1[t1["run"] == "base"]["declared"].all()  # the base rows name their sampler (tables.base_rows)
    cols = {c.key: c.group for c in pt.table1(m, root).columns}
    assert cols["correct"] == "in-domain" and cols["clip"] == "out-of-domain"  # Table 1's own task view
    assert {c.key: c.group for c in t3.columns}["correct"] == "out-of-domain"
    f = figure4_frame(m, root, "correct")
    assert set(zip(f["method"], f["sampler"])) >= {("TAFS-GRPO", "annealed"), ("Base", "ode")}
    assert ("TAFS-GRPO", "ode") not in set(zip(f["method"], f["sampler"])) and ("Base", "annealed") not in set(
        zip(f["method"], f["sampler"]))


def test_a_missing_declared_evaluation_is_an_error(tmp_path):
    root = make_tree(tmp_path, seeds=[0])
    grid = json.loads((root / "manifest.json").read_text())
    grid["models"] = [{"kind": "run", "name": "tafs_grpo", "samplers": ["ode"]}]
    write(root / "manifest.json", grid)
    with pytest.raises(ValueError, match="declared sampler 'annealed'"):
        pt.table3(load_manifest(root / "manifest.json"), root)


def test_ablation_rows_with_fewer_seeds_say_so(tmp_path):
    """A row trained at fewer seeds (ablations.seeds) is averaged over its own seeds; the table shows the Seeds
    column and the caption says how ± reads for each kind of row."""
    root = make_tree(tmp_path)
    grid = json.loads((root / "manifest.json").read_text())
    grid["run_seeds"] = {"no_step_adv": [0]}
    (root / "manifest.json").write_text(json.dumps(grid))
    for seed in (1, 2):  # never trained: the report must not need them
        (root / "runs" / "no_step_adv" / f"seed{seed}" / "train_summary.json").unlink()
        Layout(root).eval_metrics(ModelRef.run("no_step_adv", seed), "annealed", 8).unlink()
    m = load_manifest(root / "manifest.json")
    t3 = pt.table3(m, root)
    rows = t3.data.set_index("run")
    assert rows.loc["no_step_adv", "correct"] == pytest.approx(correct_value(-0.15, 0, 8))
    assert rows.loc["no_step_adv", "correct_ci95"] == pytest.approx(EVAL_CI)
    assert rows.loc["tafs_grpo", "correct"] == pytest.approx(0.4)
    assert list(rows["n_seeds"]) == [3, 1]
    assert "Seeds" in to_markdown(t3) and "1 or 3 seeds" in t3.caption
    assert "Seeds" not in to_markdown(pt.table4(m, root))  # same seed count in every row: no column
