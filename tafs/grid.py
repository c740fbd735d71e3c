"""The experiment grid: which training runs the DAG makes, which models it evaluates, which run fills
which table row.

From the config's ``task`` (its training rewards and metrics), ``methods`` (presets), ``tables`` (which
methods Tables 1-3 compare) and ``ablations`` (N_annealed, N_adv and reward mixes around one method),
``build_grid`` derives every run as a merged training config. Runs whose merged configs are identical are
one run: the N_annealed = 3 and N_adv = 3 rows and the "combined" reward row reuse TAFS-GRPO's run,
N_adv = 1 reuses "w/o Step Adv.". Every model is reported with the sampler its method declares
(``RunSpec.eval_sampler``: the annealed chain for annealed-chain methods, the Euler ODE for SDE-trained ones,
``BASE_SAMPLER`` for the base), never one picked by a test metric. The models the evaluation sweep samples
are the base and every run at every seed; every evaluation a table or Figure 4 reads must be one the sweep
makes (checked here, before any job runs). The grid is written to ``results/manifest.json``; tables, figures and MLflow read it.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import asdict, dataclass, field

from tafs.config import ConfigError, deep_merge
from tafs.rewards import registry as rewards
from tafs.tasks import registry as tasks
from tafs.tasks.base import TaskSpec

RUN_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
BASE_SAMPLER = "ode"  # the base model's declared sampler: Table 2's base row and Figure 4's base line
REMOVED_BEST = ("tables.base_rows: sampler 'best' (the better sampler on the test metric) was removed: the tables "
                "report the sampler a model declares; name it, e.g. [[ode, 28], [ode, 4], [ode, 8]]")


@dataclass(frozen=True)
class RunSpec:
    """A training run (one per seed): the one run type of the grid, the rules, the tables and MLflow."""

    name: str  # folder under results/runs/ and the `run` wildcard
    label: str  # how tables and plots name it
    eval_sampler: str  # ode | annealed: the declared sampler the tables, Figure 4 and captions report
    train: dict = field(default_factory=dict)  # `train` merged with the method's and ablation's overrides (no seed)
    origin: str = ""  # the config keys it comes from (for error messages)
    task: str = ""  # the task whose training rewards it uses when not the config's `task` (Table 1's own task)


@dataclass
class Grid:
    runs: dict[str, RunSpec] = field(default_factory=dict)
    tables: dict[str, object] = field(default_factory=dict)
    task: TaskSpec | None = None
    extra: list[str] = field(default_factory=list)  # the runs of tables.extra (trained at every seed)

    def add(self, spec: RunSpec) -> str:
        """Add a run, or return the name of an existing run with the same training config once the trainer's
        defaults fill in what either leaves out (``n_annealed: 3`` given or not is one run)."""
        key = _canonical(normalised_train(spec.train))
        for name, other in self.runs.items():
            if _canonical(normalised_train(other.train)) == key and other.eval_sampler == spec.eval_sampler:
                return name
        if not RUN_NAME.match(spec.name):
            raise ConfigError(f"run name {spec.name!r} must match {RUN_NAME.pattern} (it becomes a folder)")
        self.runs[spec.name] = spec
        return spec.name


def _canonical(d: dict) -> str:
    return json.dumps(d, sort_keys=True)


@functools.cache
def _train_defaults() -> str:
    """``TrainConfig()``'s fields (nested lora, method, advantage) as JSON. Imported here, not at the top: the
    trainer's module imports torch, which nothing else in `tafs grid` needs (the DAG's planning imports it
    anyway, to check every run's config)."""
    from tafs.train.trainer import TrainConfig

    return json.dumps(asdict(TrainConfig()))


def normalised_train(train: dict) -> dict:
    """A run's `train` dict with the trainer's defaults filled in: what the run trains with, so runs are compared
    (and ablation values read) whether a default was written in the config or not. The runs keep the dict as
    given (their job configs do not change)."""
    return deep_merge(json.loads(_train_defaults()), train)


def natural_sampler(train: dict) -> str:
    """The sampler a method declares when ``methods.X.eval_sampler`` is not set: its training sampler's
    ``eval_sampler`` (:mod:`tafs.train.samplers`): annealed-chain methods (TAFS-GRPO and its ablations) are
    evaluated with the annealed chain, SDE-trained ones (flow_sde, dance_sde, mix_sde, cps) with the Euler ODE.
    Imported here, not at the top, like the trainer's defaults: the samplers import torch."""
    from tafs.train.samplers import get_sampler

    try:
        return get_sampler(normalised_train(train)["method"]["sampler"]).eval_sampler
    except ValueError as e:
        raise ConfigError(str(e)) from e


def base_train(config: dict, task: TaskSpec) -> dict:
    """The `train` section with the task's training rewards where `train.advantage.rewards` is not set."""
    train = copy.deepcopy(config["train"])
    adv = train.setdefault("advantage", {})
    if not adv.get("rewards"):
        adv["rewards"] = dict(task.rewards)
    return train


def check_rewards(weights: dict, where: str) -> None:
    """Known reward names, weights >= 0 and not all zero; errors name ``where`` (the config key)."""
    rewards.check_names(weights, where)
    bad = {k: w for k, w in weights.items() if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0}
    if bad or not any(weights.values()):
        raise ConfigError(f"{where}: reward weights must be numbers >= 0, not all zero; got {dict(weights)}")


def method_spec(config: dict, name: str, where: str, task: TaskSpec, own_task: bool = False) -> RunSpec:
    """A method preset as a run; ``own_task``: trained on ``task``'s rewards, which is not the config's
    ``task`` (Table 1's task), so the run's name says which (``tafs_grpo-toy_composition``)."""
    methods = config["methods"]
    if name not in methods:
        raise ConfigError(f"{where}: unknown method {name!r}; defined under `methods:`: {sorted(methods)}")
    m = methods[name] or {}
    train = deep_merge(base_train(config, task), m.get("train", {}))
    check_rewards(train["advantage"]["rewards"], f"methods.{name}.train.advantage.rewards (or train.advantage."
                                                 f"rewards / the task's rewards)")
    run = f"{name}-{task.name}" if own_task else name
    return RunSpec(run, m.get("label", name), m.get("eval_sampler") or natural_sampler(train), train,
                   f"methods.{name} (with `train:`)" + (f" on task {task.name!r}" if own_task else ""),
                   task.name if own_task else "")


def _variant(base: RunSpec, suffix: str, label: str, overrides: dict, origin: str) -> RunSpec:
    train = deep_merge(copy.deepcopy(base.train), overrides)
    return RunSpec(f"{base.name}-{suffix}", f"{base.label} ({label})", natural_sampler(train), train,
                   f"{origin} around {base.origin}")


def n_annealed_n_adv(k: int, n_adv: int, mode: str) -> int:
    """N_adv of Table 4's N_annealed = k run: ``all`` (default) integrates every scored step's advantage, k, as
    Algorithm 1 line 18 sums them; ``base`` keeps the ablated method's N_adv (capped at the k scored steps).
    Either way the row k = K is the ablated method's own run when it integrates every step (N_adv = K, the
    default), since the grid deduplicates identical runs."""
    if mode not in ("all", "base"):
        raise ConfigError(f"ablations.n_annealed_n_adv: {mode!r} is not one of all, base")
    return k if mode == "all" else min(n_adv, k)


def _ablation_rows(grid: Grid, base: RunSpec, ablations: dict) -> None:
    full = normalised_train(base.train)
    n_adv, k_base = full["advantage"]["n_adv"], full["method"]["n_annealed"]
    mode = ablations.get("n_annealed_n_adv", "all")
    grid.tables["table4"] = [
        [str(k), grid.add(_variant(base, f"n_annealed{k}", f"N_annealed={k}",
                                   {"method": {"n_annealed": k},
                                    "advantage": {"n_adv": n_annealed_n_adv(k, n_adv, mode)}},
                                   f"ablations.n_annealed [{k}]"))]
        for k in ablations.get("n_annealed", [])]
    bad = [n for n in ablations.get("n_adv", []) if n > k_base]
    if bad:
        raise ConfigError(f"ablations.n_adv: {bad} exceed the {k_base} scored steps of {base.name} "
                          f"(train.method.n_annealed); use values <= {k_base}")
    grid.tables["table5"] = [
        [str(n), grid.add(_variant(base, f"n_adv{n}", f"N_adv={n}", {"advantage": {"n_adv": n}},
                                   f"ablations.n_adv [{n}]"))]
        for n in ablations.get("n_adv", [])]
    for mode in ablations.get("advantage_modes", []):  # extra Table 5 rows: the same N_adv, another mode
        grid.tables["table5"].append(
            [f"{n_adv} ({mode})", grid.add(_variant(base, f"adv_{mode}", f"advantage {mode}",
                                                    {"advantage": {"mode": mode}},
                                                    f"ablations.advantage_modes [{mode}]"))])
    # A reward mix replaces the reward weights outright (deep_merge would keep the base's other rewards).
    rows = []
    for mix, weights in ablations.get("reward_mixes", {}).items():
        check_rewards(weights, f"ablations.reward_mixes.{mix}")
        train = copy.deepcopy(base.train)
        train["advantage"]["rewards"] = dict(weights)
        spec = RunSpec(f"{base.name}-reward_{mix}", f"{base.label} ({mix})", natural_sampler(train), train,
                       f"ablations.reward_mixes.{mix} around {base.origin}")
        rows.append([mix, grid.add(spec)])
    grid.tables["table6"] = rows


def figure_metric(config: dict, task: TaskSpec) -> str:
    """Figure 4's main metric: config `figure4.metric`, else the task's headline metric."""
    return (config.get("figure4") or {}).get("metric") or task.headline_metric


def check_evals(config: dict, task: TaskSpec) -> None:
    """The tables and Figure 4 read evaluations the sweep must make: say which key to change when they do not."""
    tables, sweep = config["tables"], config["sweep"]
    missing = sorted({tables["main_nfe"], *tables["table1_nfe"]} - set(sweep["run_nfe"]))
    if missing:
        raise ConfigError(f"tables.main_nfe / tables.table1_nfe use NFE {missing}, which sweep.run_nfe "
                          f"{sweep['run_nfe']} does not evaluate: add them to sweep.run_nfe")
    if any(s == "best" for s, _ in tables["base_rows"]):
        raise ConfigError(REMOVED_BEST)
    needs = [("tables.base_rows", s, n) for s, n in tables["base_rows"]]
    needs.append(("tables.main_nfe (Table 2's base row)", BASE_SAMPLER, tables["main_nfe"]))
    for key, sampler, nfe in needs:
        if sampler not in sweep["base_samplers"] or nfe not in sweep["base_nfe"]:
            raise ConfigError(f"{key}: the base model at ({sampler}, {nfe} NFE) is not evaluated by "
                              f"sweep.base_samplers {sweep['base_samplers']} x sweep.base_nfe {sweep['base_nfe']}: "
                              f"add it there")
    metric = figure_metric(config, task)
    keys = [m.key for m in task.metrics]
    if metric not in keys:
        raise ConfigError(f"figure4.metric: {metric!r} is not a metric of task {task.name!r}; use one of {keys}")


def table1_task(config: dict, task: TaskSpec) -> TaskSpec | None:
    """Table 1's own task, when it is not ``task:``: ``tables.table1.task``, else the task's ``table1_task`` (the toy
    preference task's is the toy composition task). It must share the config task's prompt files and metrics (the
    toy world's two tasks do): Table 1's runs train on its rewards and the table labels its metrics in- or
    out-of-domain its way; everything is evaluated once."""
    name = (config["tables"].get("table1") or {}).get("task") or task.table1_task
    if not name or name == task.name:
        return None
    other = tasks.get(name, config, "tables.table1.task")
    same = (other.generator == task.generator and dict(other.prompt_files) == dict(task.prompt_files)
            and {(m.key, m.reward) for m in other.metrics} == {(m.key, m.reward) for m in task.metrics})
    if not same:
        raise ConfigError(f"tables.table1.task: task {name!r} does not share the prompt files and metrics of task "
                          f"{task.name!r}, so one DAG cannot evaluate both; run it as a config of its own "
                          f"(task: {name}) or remove tables.table1.task")
    return other


def _table1_rows(config: dict, task: TaskSpec, grid: Grid) -> list[list[str]] | None:
    """Table 1's rows when it has a task of its own or ``tables.table1.methods``, else None (the comparison's).
    Its methods: ``tables.table1.methods``; with a task of its own, by default the method the ablations vary
    (TAFS-GRPO: the paper's Table 1 trains that one on the composition task), else ``tables.comparison``."""
    spec = config["tables"].get("table1") or {}
    other = table1_task(config, task)
    if other is None and not spec.get("methods"):
        return None
    of = config["tables"].get("ablation_of")
    methods = spec.get("methods") or ([of] if other is not None and of else config["tables"].get("comparison", []))
    specs = [method_spec(config, name, "tables.table1.methods", other or task, other is not None) for name in methods]
    return [[spec.label, grid.add(spec)] for spec in specs]


def build_grid(config: dict) -> Grid:
    """Every run of the DAG and every table's rows, from a validated config."""
    task = tasks.from_config(config)
    check_evals(config, task)
    check_baselines(config)
    for name, kwargs in (config.get("reward_models") or {}).items():
        rewards.check_names([name], f"reward_models.{name}")
        rewards.check_kwargs(name, kwargs or {}, f"reward_models.{name}")
    tables = config["tables"]
    grid = Grid(tables={"table4": [], "table5": [], "table6": [], "table7": None})
    for key, table_ids in (("comparison", ("table1", "table2")), ("components", ("table3",))):
        rows = []
        for name in tables.get(key, []):
            spec = method_spec(config, name, f"tables.{key}", task)
            rows.append([spec.label, grid.add(spec)])
        for t in table_ids:
            grid.tables[t] = rows
    # Table 2 lists the baselines first and TAFS last, as the paper does.
    last = tables.get("ablation_of") or "tafs_grpo"
    grid.tables["table2"] = sorted(grid.tables["table2"], key=lambda r: r[1] == last)
    own = _table1_rows(config, task, grid)
    if own is not None:
        grid.tables["table1"] = own
    for name in tables.get("extra", []):
        grid.extra.append(grid.add(method_spec(config, name, "tables.extra", task)))
    of = tables.get("ablation_of")
    if of:
        _ablation_rows(grid, method_spec(config, of, "tables.ablation_of", task), config.get("ablations", {}))
        grid.tables["table7"] = grid.add(method_spec(config, of, "tables.ablation_of", task))
    grid.task = task
    return grid


def run_nfes(config: dict, grid: Grid, run: str) -> list[int]:
    """The NFEs a run is evaluated at: the whole ``sweep.run_nfe`` for the runs of Tables 1-2 and Figure 4,
    ``tables.main_nfe`` (all Tables 3-6 read) for the others, unless ``sweep.ablation_nfe: all``."""
    sweep, tables = config["sweep"], config["tables"]
    swept = {r for t in ("table1", "table2") for _, r in grid.tables.get(t) or []}
    if run in swept or sweep.get("ablation_nfe", "main") == "all":
        return list(sweep["run_nfe"])
    return [tables["main_nfe"]]


def run_seeds(config: dict, grid: Grid, run: str) -> list[int]:
    """The training seeds of a run: ``seeds`` for the runs of Tables 1-2, Figure 4, Table 7 and ``tables.extra``;
    ``ablations.seeds`` (when set) for the runs only Tables 3-6 read, so that a grid can cut its ablation rows'
    seeds before the comparison's (each table row states its seed count)."""
    own = (config.get("ablations") or {}).get("seeds")
    if not own:
        return list(config["seeds"])
    main = {r for t in ("table1", "table2") for _, r in grid.tables.get(t) or []}
    main |= {grid.tables.get("table7")} | set(grid.extra)
    return list(config["seeds"]) if run in main else list(own)


def run_samplers(config: dict, spec: RunSpec) -> list[str]:
    """``sweep.run_samplers`` (every run under each, e.g. [ode, annealed]: the CSVs hold every sampler's rows,
    marked declared or not), with the run's declared eval sampler first when they leave it out: the tables, the
    captions and Figure 4 read that one."""
    samplers = list(config["sweep"].get("run_samplers") or [])
    return samplers if spec.eval_sampler in samplers else [spec.eval_sampler] + samplers


def eval_models(config: dict, grid: Grid) -> list[dict]:
    """Every model the evaluation sweep samples, with its samplers and NFEs (one eval job per model,
    seed and sampler): the base, then each run at every seed."""
    sweep = config["sweep"]
    models = [{"kind": "base", "name": "base", "label": "Base", "seeds": [None],
               "samplers": list(sweep["base_samplers"]), "nfe": list(sweep["base_nfe"])}]
    models += [{"kind": "run", "name": name, "label": spec.label, "seeds": run_seeds(config, grid, name),
                "samplers": run_samplers(config, spec), "nfe": run_nfes(config, grid, name)}
               for name, spec in grid.runs.items()]
    models += [{"kind": "baseline", "name": name, "label": b.get("label", name), "seeds": [None],
                "samplers": ["pipeline"], "nfe": list(b["nfe"])} for name, b in (config.get("baselines") or {}).items()]
    return models


def check_baselines(config: dict) -> None:
    """Evaluation-only models: a folder-safe name, a model, NFEs >= 1."""
    for name, b in (config.get("baselines") or {}).items():
        where = f"baselines.{name}"
        if not RUN_NAME.match(name):
            raise ConfigError(f"{where}: the name must match {RUN_NAME.pattern} (it becomes a folder)")
        if not isinstance(b, dict) or b.get("model") is None:
            raise ConfigError(f"{where}.model: name the model (a folder or {{hub: owner/name}})")
        nfe = b.get("nfe")
        if not isinstance(nfe, list) or not nfe or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                                       for n in nfe):
            raise ConfigError(f"{where}.nfe: a list of sampling steps >= 1, e.g. [4], got {nfe!r}")
        extra = sorted(set(b.get("table_nfe") or []) - set(nfe))
        if extra:
            raise ConfigError(f"{where}.table_nfe: {extra} are not evaluated: add them to {where}.nfe")


def grid_manifest(config: dict, grid: Grid, categories: list[str] | None = None) -> dict:
    """The JSON the report stages read (``results/manifest.json``). ``categories``: those of the evaluation
    prompt file, used when the task declares none."""
    tables, sweep, task = config["tables"], config["sweep"], grid.task
    labels = {m.key: m.label for m in task.metrics}
    labels.update(tables.get("metric_labels") or {})
    metric = figure_metric(config, task)
    second = next((k for k in task.domain("in") if k != metric), None)
    t1 = table1_task(config, task) or task
    manifest_task = task.manifest()
    if not manifest_task["categories"] and categories:
        manifest_task["categories"] = list(categories)
    return {
        "task": manifest_task,
        "seeds": list(config["seeds"]),
        "run_seeds": {name: run_seeds(config, grid, name) for name in grid.runs},
        "run_nfe": list(sweep["run_nfe"]),
        "main_nfe": tables["main_nfe"],
        "table1_nfe": list(tables["table1_nfe"]),
        "base": {"label": "Base", "evals": [[s, n] for s, n in tables["base_rows"]], "sampler": BASE_SAMPLER},
        "metrics": {"in_domain": task.domain("in"), "out_of_domain": task.domain("out")},
        "table1_metrics": {"task": t1.name, "in_domain": t1.domain("in"), "out_of_domain": t1.domain("out")},
        "headline": {"main": task.headline_metric, "table1": t1.headline_metric},
        "metric_labels": labels,
        "figure4": {"metric": metric, "second": second},
        "models": eval_models(config, grid),
        "baselines": {name: {"label": b.get("label", name), "nfe": list(b["nfe"]),
                             "table_nfe": list(b.get("table_nfe") or b["nfe"])}
                      for name, b in (config.get("baselines") or {}).items()},
        "runs": {name: {k: v for k, v in asdict(spec).items() if k != "name"} for name, spec in grid.runs.items()},
        "tables": grid.tables,
    }
