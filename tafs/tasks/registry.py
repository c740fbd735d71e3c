"""Tasks by name: the built-in ones (name -> module, imported when used) and the user's, from config ``tasks:``.

A new built-in task is a module defining ``TASKS = {name: TaskSpec(...)}`` and one line in ``BUILTIN``.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from tafs.config import ConfigError
from tafs.tasks.base import TaskSpec, user_task

BUILTIN: dict[str, str] = {
    "toy_preference": "tafs.tasks.toy",
    "toy_composition": "tafs.tasks.toy",
    "shapes_clip": "tafs.tasks.toy",
    "geneval": "tafs.tasks.paper",
    "pickapic": "tafs.tasks.paper",
}
# Modules whose ``COMMANDS`` ({name: (function(argv), help)}) add DAG stages to ``python -m tafs``: models
# that a task's world builds itself (the toy base, the toy scorer).
COMMAND_MODULES: tuple[str, ...] = ("tafs.tasks.toy_commands",)


def commands() -> dict[str, tuple]:
    return {name: cmd for mod in COMMAND_MODULES for name, cmd in importlib.import_module(mod).COMMANDS.items()}


def available(config: Mapping[str, Any] | None = None) -> list[str]:
    return sorted({*BUILTIN, *((config or {}).get("tasks") or {})})


def get(name: str, config: Mapping[str, Any] | None = None, where: str = "task") -> TaskSpec:
    """Task ``name``: a user task of ``config['tasks']`` (it shadows a built-in one) or a built-in task."""
    user = (config or {}).get("tasks") or {}
    if name in user:
        entry = user[name]
        parent = entry.get("extends") if isinstance(entry, Mapping) else None
        if parent is not None and parent not in BUILTIN:
            raise ConfigError(f"tasks.{name}.extends: {parent!r} is not a built-in task; built-in: {sorted(BUILTIN)}")
        base = importlib.import_module(BUILTIN[parent]).TASKS[parent] if parent else None
        return user_task(name, entry, f"tasks.{name}", base)
    if name not in BUILTIN:
        raise ConfigError(f"{where}: unknown task {name!r}; available: {available(config)} "
                          "(`python -m tafs tasks` describes them; a task of your own goes under `tasks:`)")
    return importlib.import_module(BUILTIN[name]).TASKS[name]


def from_config(config: Mapping[str, Any]) -> TaskSpec:
    """The task the config's ``task:`` key picks."""
    name = config.get("task")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"task: name the task to run, one of {available(config)}; got {name!r}")
    return get(name, config)


def all_tasks(config: Mapping[str, Any] | None = None) -> list[TaskSpec]:
    return [get(n, config) for n in available(config)]
