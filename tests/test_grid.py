"""The experiment grid: runs from methods x ablations, deduplicated, and each table's rows."""

import copy
import re

import pytest
import yaml

from dag_utils import REPO
from tafs.config import ConfigError
from tafs.grid import build_grid, grid_manifest, natural_sampler


@pytest.fixture()
def config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_grid_runs_and_dedup(config):
    assert config["ablations"]["advantage_modes"] == []  # the default grid leaves the extra Table 5 row out
    config["ablations"]["advantage_modes"] = ["to_go"]
    grid = build_grid(config)
    assert set(grid.runs) == {
        "tafs_grpo", "flow_grpo", "dance_grpo", "mix_grpo", "no_tafs", "no_step_adv", "tafs_grpo_shuffled",
        "tafs_grpo-toy_composition", "tafs_grpo-n_annealed1", "tafs_grpo-n_annealed5", "tafs_grpo-n_adv2",
        "tafs_grpo-adv_to_go", "tafs_grpo-reward_clip_only"}
    t = grid.tables
    # rows that equal an existing run reuse it: N_annealed = 3, N_adv = 3 and "combined" are TAFS-GRPO
    assert t["table4"] == [["1", "tafs_grpo-n_annealed1"], ["3", "tafs_grpo"], ["5", "tafs_grpo-n_annealed5"]]
    assert t["table5"] == [["1", "no_step_adv"], ["2", "tafs_grpo-n_adv2"], ["3", "tafs_grpo"],
                           ["3 (to_go)", "tafs_grpo-adv_to_go"]]
    assert dict(t["table6"])["combined"] == "tafs_grpo"
    # Table 1 trains on toy_composition's reward (the checker's dense score): the same run as dense-only
    assert t["table1"] == [["TAFS-GRPO", "tafs_grpo-toy_composition"]]
    assert dict(t["table6"])["dense_only"] == "tafs_grpo-toy_composition"
    assert grid.runs["tafs_grpo-toy_composition"].train["advantage"]["rewards"] == {"toy_dense": 1.0}
    assert grid.runs["tafs_grpo-adv_to_go"].train["advantage"]["mode"] == "to_go"
    assert t["table7"] == "tafs_grpo"
    assert [r[1] for r in t["table2"]][-1] == "tafs_grpo"  # baselines first, TAFS last (as the paper)


def test_variants_carry_their_overrides(config):
    runs = build_grid(config).runs
    assert runs["tafs_grpo-n_annealed1"].train["method"]["n_annealed"] == 1
    assert runs["tafs_grpo-n_annealed1"].train["advantage"]["n_adv"] == 1
    # Table 4 integrates every step's advantage (Algorithm 1 line 18): N_annealed = 5 -> N_adv = 5
    assert runs["tafs_grpo-n_annealed5"].train["advantage"]["n_adv"] == 5
    assert runs["tafs_grpo-n_annealed5"].train["method"]["n_annealed"] == 5
    assert runs["tafs_grpo-reward_clip_only"].train["advantage"]["rewards"] == {"clip": 1.0}
    # the task's training rewards fill in train.advantage.rewards (toy_preference: dense + learned CLIP)
    assert runs["tafs_grpo"].train["advantage"]["rewards"] == {"toy_dense": 1.0, "clip": 1.0}
    # natural samplers: SDE-trained baselines are evaluated with the ODE, TAFS variants with the chain
    assert runs["flow_grpo"].eval_sampler == "ode" and runs["no_tafs"].eval_sampler == "ode"
    assert runs["no_step_adv"].eval_sampler == "annealed"
    assert runs["dance_grpo"].train["method"] == {**config["train"]["method"], **config["methods"]["dance_grpo"][
        "train"]["method"]}


def test_build_grid_does_not_mutate_config(config):
    before = copy.deepcopy(config)
    build_grid(config)
    assert config == before


def test_explicit_eval_sampler_and_extra(config):
    config["methods"]["flow_grpo"]["eval_sampler"] = "annealed"
    config["tables"]["extra"] = ["tafs_grpo_shuffled"]
    runs = build_grid(config).runs
    assert runs["flow_grpo"].eval_sampler == "annealed"
    assert runs["tafs_grpo_shuffled"].train["advantage"]["shuffle_control"] is True


def test_unknown_method_names_the_key(config):
    config["tables"]["comparison"].append("nope")
    with pytest.raises(ConfigError, match=r"tables.comparison: unknown method 'nope'"):
        build_grid(config)


def test_n_adv_beyond_scored_steps_is_refused(config):
    config["ablations"]["n_adv"] = [1, 4]
    with pytest.raises(ConfigError, match=r"ablations.n_adv: \[4\]"):
        build_grid(config)


def test_manifest_is_json_ready(config):
    import json

    m = grid_manifest(config, build_grid(config))
    assert json.loads(json.dumps(m)) == m
    assert m["base"]["evals"] == [["ode", 28], ["ode", 4], ["ode", 8]] and m["base"]["sampler"] == "ode"
    # Table 1's task labels strict accuracy in-domain; the main task (preference) holds it out
    assert m["table1_metrics"]["in_domain"] == ["correct", "dense"] and "correct" in m["metrics"]["out_of_domain"]
    runs = {x["name"]: x for x in m["models"] if x["kind"] == "run"}
    # the default: each run under its declared sampler only (sweep.run_samplers: null)
    assert runs["flow_grpo"]["samplers"] == ["ode"] and runs["flow_grpo"]["nfe"] == [4, 5, 6, 7, 8]
    assert runs["tafs_grpo"]["samplers"] == ["annealed"]
    config["sweep"]["run_samplers"] = ["ode", "annealed"]
    runs = {x["name"]: x for x in grid_manifest(config, build_grid(config))["models"] if x["kind"] == "run"}
    assert runs["tafs_grpo"]["samplers"] == ["ode", "annealed"]  # sweep.run_samplers' order (its declared: annealed)
    assert m["runs"]["flow_grpo"]["eval_sampler"] == "ode" and m["runs"]["tafs_grpo"]["eval_sampler"] == "annealed"
    assert runs["tafs_grpo-n_adv2"]["nfe"] == [8]  # ablation runs: the tables' NFE only
    assert m["runs"]["flow_grpo"]["label"] == "Flow-GRPO" and m["main_nfe"] == 8


def test_table1_task_must_share_prompts_and_metrics(config):
    config["tables"]["table1"] = {"task": "geneval"}
    with pytest.raises(ConfigError, match="tables.table1.task: task 'geneval' does not share"):
        build_grid(config)
    config["tables"]["table1"] = {"task": "toy_preference"}  # Table 1 then shows the comparison runs
    grid = build_grid(config)
    assert [r for _, r in grid.tables["table1"]] == ["tafs_grpo", "flow_grpo", "dance_grpo", "mix_grpo"]
    assert "tafs_grpo-toy_composition" not in grid.runs
    config["tables"]["table1"] = {"methods": ["tafs_grpo", "flow_grpo"]}  # toy_composition's rows, chosen
    rows = build_grid(config).tables["table1"]
    assert [r for _, r in rows] == ["tafs_grpo-toy_composition", "flow_grpo-toy_composition"]


def test_tables_need_evaluated_nfes(config):
    config["tables"]["main_nfe"] = 16
    with pytest.raises(ConfigError, match=r"sweep.run_nfe"):
        build_grid(config)
    config["tables"]["main_nfe"] = 8
    config["tables"]["base_rows"].append(["annealed", 3])
    with pytest.raises(ConfigError, match=r"tables.base_rows: the base model at \(annealed, 3 NFE\)"):
        build_grid(config)
    config["tables"]["base_rows"].pop()
    config["sweep"]["base_nfe"] = [4, 28]  # Table 2's base row reads the base's ODE at main_nfe (8)
    config["tables"]["base_rows"] = [["ode", 28]]
    with pytest.raises(ConfigError, match=r"tables.main_nfe \(Table 2's base row\): the base model at \(ode, 8 NFE\)"):
        build_grid(config)


def test_figure4_metric_must_be_a_task_metric(config):
    config["figure4"]["metric"] = "strict"
    with pytest.raises(ConfigError, match=r"figure4.metric: 'strict' is not a metric of task 'toy_preference'"):
        build_grid(config)


@pytest.mark.parametrize("where, edit, needle", [
    ("task", lambda c: c.update(task="geneval_typo"), "task: unknown task 'geneval_typo'"),
    ("train rewards", lambda c: c["train"]["advantage"].update(rewards={"pickscroe": 1.0}),
     "unknown reward(s) ['pickscroe']"),
    ("method rewards", lambda c: c["methods"]["flow_grpo"].setdefault("train", {}).setdefault("advantage", {})
     .update(rewards={"toy_dense": -1.0}), "methods.flow_grpo.train.advantage.rewards"),
    ("mix", lambda c: c["ablations"]["reward_mixes"].update(bad={"clipp": 1.0}), "ablations.reward_mixes.bad"),
    ("zero mix", lambda c: c["ablations"]["reward_mixes"].update(zero={"clip": 0.0}), "not all zero"),
    ("reward model", lambda c: c["reward_models"].update(hpsv3={"path": "x"}), "reward_models.hpsv3"),
])
def test_bad_names_and_weights_name_the_key(config, where, edit, needle):
    edit(config)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        build_grid(config)


def test_manifest_carries_the_task_and_the_models(config):
    m = grid_manifest(config, build_grid(config))
    assert m["task"]["name"] == "toy_preference" and m["task"]["category_metric"] == "correct"
    assert m["metrics"] == {"in_domain": ["dense", "clip"], "out_of_domain": ["correct"]}
    assert m["figure4"] == {"metric": "correct", "second": "dense"}
    models = {x["name"]: x for x in m["models"]}
    assert models["base"]["samplers"] == ["ode", "annealed"] and models["base"]["seeds"] == [None]
    assert models["flow_grpo"]["samplers"] == ["ode"] and models["flow_grpo"]["seeds"] == [0, 1, 2]
    assert set(models) == {"base", *build_grid(config).runs}
    config["sweep"]["run_samplers"] = ["ode", "annealed"]
    models = {x["name"]: x for x in grid_manifest(config, build_grid(config))["models"]}
    assert models["flow_grpo"]["samplers"] == ["ode", "annealed"]
    config["sweep"]["run_samplers"] = None  # then each run under its own eval sampler only
    models = {x["name"]: x for x in grid_manifest(config, build_grid(config))["models"]}
    assert models["flow_grpo"]["samplers"] == ["ode"] and models["tafs_grpo"]["samplers"] == ["annealed"]
    config["sweep"]["run_samplers"] = ["ode"]  # the declared sampler is always evaluated (the tables read it)
    models = {x["name"]: x for x in grid_manifest(config, build_grid(config))["models"]}
    assert models["tafs_grpo"]["samplers"] == ["annealed", "ode"] and models["flow_grpo"]["samplers"] == ["ode"]


def test_toy_composition_task_trains_on_the_checker(config):
    config["task"] = "toy_composition"
    grid = build_grid(config)
    assert grid.runs["tafs_grpo"].train["advantage"]["rewards"] == {"toy_dense": 1.0}
    m = grid_manifest(config, grid)
    assert m["metrics"] == {"in_domain": ["correct", "dense"], "out_of_domain": ["clip"]}


@pytest.mark.parametrize("sampler, declared", [
    ("annealed", "annealed"), ("flow_sde", "ode"), ("dance_sde", "ode"), ("mix_sde", "ode"), ("cps", "ode")])
def test_natural_sampler_is_the_declared_one(sampler, declared):
    """The live rule (RunSpec.eval_sampler when methods.X.eval_sampler is unset): annealed-chain methods use the
    chain, SDE-trained ones the Euler ODE; a train config without method.sampler is the annealed default."""
    assert natural_sampler({"method": {"sampler": sampler}}) == declared
    assert natural_sampler({}) == "annealed"


def test_best_base_rows_are_refused_with_what_to_write(config):
    config["tables"]["base_rows"] = [["best", 28], ["ode", 4]]
    with pytest.raises(ConfigError, match=r"sampler 'best' .* was removed: .*\[\[ode, 28\], \[ode, 4\], \[ode, 8\]\]"):
        build_grid(config)


def test_best_is_a_schema_error_that_says_what_to_write(config):
    from tafs.config import schema_errors

    config["tables"]["base_rows"] = [["best", 28]]
    errors = schema_errors(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    assert any(e.startswith("tables.base_rows.0.0:") and "write e.g. [ode, 28]" in e for e in errors), errors


def test_n_annealed_runs_integrate_every_step_unless_told(config):
    grid = build_grid(config)
    assert grid.tables["table4"][1] == ["3", "tafs_grpo"]  # N_annealed = 3 with N_adv = 3 is TAFS-GRPO's run
    assert grid.runs["tafs_grpo-n_annealed5"].train["advantage"]["n_adv"] == 5
    config["ablations"]["n_annealed_n_adv"] = "base"  # the ablated method's N_adv, capped at k
    grid = build_grid(config)
    assert grid.runs["tafs_grpo-n_annealed5"].train["advantage"]["n_adv"] == 3
    assert grid.tables["table4"][1] == ["3", "tafs_grpo"]


@pytest.mark.parametrize("section, key", [("method", "n_annealed"), ("advantage", "n_adv")])
def test_a_default_left_out_of_train_is_the_same_grid(config, section, key):
    """Runs are compared with the trainer's defaults filled in: removing ``train.method.n_annealed: 3`` (or
    ``advantage.n_adv: 3``, both TrainConfig defaults) from config.yaml leaves the runs and rows as they were."""
    from dataclasses import asdict

    from tafs.train.trainer import TrainConfig

    assert config["train"][section][key] == asdict(TrainConfig())[section][key]
    before = build_grid(config)
    del config["train"][section][key]
    after = build_grid(config)
    assert set(after.runs) == set(before.runs) and after.tables == before.tables
    assert after.runs["tafs_grpo-n_annealed5"].train["method"]["n_annealed"] == 5
    assert after.runs["tafs_grpo-n_annealed5"].train["advantage"]["n_adv"] == 5


def test_ablation_only_rows_train_at_ablation_seeds(config):
    """``ablations.seeds`` cuts the seeds of the runs only Tables 3-6 read; Tables 1-2 / Figure 4 / Table 7 keep
    ``seeds``; the DAG's targets (training summaries, evaluations) follow."""
    from tafs.dag import Plan

    assert config["ablations"]["seeds"] == [0] and config["seeds"] == [0, 1, 2]
    plan = Plan(config)
    full = {"tafs_grpo", "flow_grpo", "dance_grpo", "mix_grpo", "tafs_grpo-toy_composition"}
    assert {r: plan.seeds(r) for r in plan.grid.runs} == {r: [0, 1, 2] if r in full else [0] for r in plan.grid.runs}
    m = grid_manifest(config, plan.grid)
    assert m["run_seeds"]["no_tafs"] == [0] and m["run_seeds"]["tafs_grpo"] == [0, 1, 2]
    assert {x["name"]: x["seeds"] for x in m["models"] if x["kind"] == "run"} == m["run_seeds"]
    summaries = plan.train_summaries()
    assert len(summaries) == 3 * len(full) + len(plan.grid.runs) - len(full)
    assert not any("/no_tafs/seed1/" in s for s in summaries + plan.eval_metrics_files())
    assert any("/tafs_grpo/seed2/" in s for s in summaries)
    config["ablations"]["seeds"] = None  # every run at every seed
    assert all(Plan(config).seeds(r) == [0, 1, 2] for r in plan.grid.runs)
