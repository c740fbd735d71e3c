"""Models from the Hugging Face hub as DAG inputs: a hub id with a revision (and optional file patterns),
fetched once into a configurable folder by the ``download`` rule, or a local folder used as it is.

In the config a model is either a path (a local folder in the hub layout) or a mapping
``{hub: owner/name, revision: main, allow_patterns: [...], ignore_patterns: [...]}``. The download goes through
huggingface_hub (``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` apply as usual), file by file into a staging
folder that an interrupted attempt leaves for the next one to resume, renamed into place only when complete, with
the commit fetched recorded in ``.tafs-download.json`` (tafs.hub_fetch). Failures end in one message that names the
repository and revision and says what to do: pre-fetch on a machine with network, accept the licence and set
``HF_TOKEN`` for a gated repository, fix the id or the revision.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tafs.config import ConfigError
from tafs.hub_fetch import partial_bytes, staging

REPO_ID = re.compile(  # a hub repository id: "name" or "owner/name"
    r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$|^[A-Za-z0-9][\w.\-]*$")
_KEYS = {"hub", "revision", "allow_patterns", "ignore_patterns"}


class DownloadError(RuntimeError):
    """A model that could not be fetched; the message says which and what to do."""


@dataclass(frozen=True)
class HubModel:
    repo: str
    revision: str = "main"
    allow_patterns: tuple[str, ...] | None = None
    ignore_patterns: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        """Its folder under the download cache: one per repository and revision."""
        return f"{self.repo.replace('/', '--')}@{re.sub(r'[^A-Za-z0-9_.-]', '_', self.revision)}"

    def prefetch_command(self, dest: Path | str) -> str:
        """The same download by hand (resumable, and it records the commit, unlike ``hf download``)."""
        pats = "".join(f" --allow '{p}'" for p in self.allow_patterns or ())
        pats += "".join(f" --ignore '{p}'" for p in self.ignore_patterns or ())
        return f"python -m tafs download --hub {self.repo} --revision {self.revision}{pats} --out {dest}"


def parse_model(value: Any, where: str) -> str | HubModel:
    """A config value naming a model: a local folder (a string) or a hub model (a mapping with ``hub``)."""
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    if not isinstance(value, Mapping) or "hub" not in value:
        raise ConfigError(f"{where}: expected a local folder or {{hub: owner/name, revision: ...}}, got {value!r}")
    unknown = sorted(set(value) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
    repo = str(value["hub"])
    if not REPO_ID.match(repo):
        raise ConfigError(f"{where}.hub: {repo!r} is not a hub repository id (owner/name)")

    def patterns(key: str) -> tuple[str, ...] | None:
        v = value.get(key)
        if v is None:
            return None
        return (v,) if isinstance(v, str) else tuple(map(str, v))

    return HubModel(repo, str(value.get("revision") or "main"), patterns("allow_patterns"),
                    patterns("ignore_patterns"))


def check_pins(named: list[tuple[str, HubModel]]) -> None:
    """One revision per repository in a config: two revisions of one repository (the base model and a baseline
    of the same repository, say) would be two downloads, and the runs would compare different models without a
    word. The same repository at the same revision is one download, so its file patterns must agree too."""
    first: dict[str, tuple[str, HubModel]] = {}
    for where, model in named:
        where0, model0 = first.setdefault(model.repo, (where, model))
        if model0.revision != model.revision:
            raise ConfigError(
                f"{model.repo} is named at two revisions: {where0}.revision = {model0.revision!r} and "
                f"{where}.revision = {model.revision!r}. Pin it in one place: give both the same revision "
                "(a YAML anchor, e.g. `revision: &flux_rev <commit>` then `revision: *flux_rev`)")
        if (model0.allow_patterns, model0.ignore_patterns) != (model.allow_patterns, model.ignore_patterns):
            raise ConfigError(
                f"{model.repo}@{model.revision} is one download, but {where0} and {where} ask for different files "
                f"(allow_patterns {_pats(model0.allow_patterns)} vs {_pats(model.allow_patterns)}, ignore_patterns "
                f"{_pats(model0.ignore_patterns)} vs {_pats(model.ignore_patterns)}): give both the same patterns")


def _pats(patterns: tuple[str, ...] | None) -> str:
    return "all" if patterns is None else str(list(patterns))


def local_path(model: str | HubModel, cache: str | Path) -> Path:
    """Where the jobs find the model: the folder itself, or its download under ``cache``."""
    return Path(model) if isinstance(model, str) else Path(cache) / model.name


def download(model: HubModel, dest: str | Path) -> dict[str, Any]:
    """Fetch ``model`` into ``dest``: resumable (tafs.hub_fetch), the folder appears only when complete.
    Returns the download record (``dest/.tafs-download.json``: repo, revision, the commit fetched, files)."""
    from tafs.hub_fetch import fetch

    dest = Path(dest)
    try:
        return fetch(model.repo, model.revision, dest, list(model.allow_patterns) if model.allow_patterns else None,
                     list(model.ignore_patterns) if model.ignore_patterns else None)
    except Exception as e:  # noqa: BLE001 - every failure becomes one message that says what to do
        raise DownloadError(explain(e, model, dest)) from e


def _chain(e: BaseException) -> list[BaseException]:
    out = []
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def explain(error: BaseException, model: HubModel, dest: Path) -> str:
    """The message for a failed download, from the most specific error in the chain."""
    from huggingface_hub import errors

    names = {type(e).__name__ for e in _chain(error)}
    what = f"{model.repo} (revision {model.revision})"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if any(isinstance(e, errors.GatedRepoError) for e in _chain(error)):
        return (f"{what} is a gated repository: accept its licence at {endpoint}/{model.repo} with your account, "
                "then set HF_TOKEN to a token of that account (huggingface.co/settings/tokens) and re-run")
    if any(isinstance(e, errors.RevisionNotFoundError) for e in _chain(error)):
        return f"{what}: the revision does not exist; fix `revision:` in the config ({endpoint}/{model.repo})"
    if any(isinstance(e, errors.RepositoryNotFoundError) for e in _chain(error)):
        return (f"{what}: no such repository at {endpoint}, or it is private and HF_TOKEN is not set; "
                "check the id in the config")
    kept = partial_bytes(dest)
    if kept and not offline_mode(names):
        return (f"download of {what} interrupted ({_first_line(error)}); the {kept / 2**20:.1f} MiB fetched so far "
                f"are kept in {staging(dest)}: re-run to resume, or pre-fetch it on a login node:\n"
                f"  {model.prefetch_command(dest)}")
    offline = offline_mode(names)
    reason = "HF_HUB_OFFLINE is set" if offline else f"no connection to {endpoint} ({_first_line(error)})"
    return (f"cannot download {what}: {reason}. Pre-fetch it on a machine with network (a login node):\n"
            f"  {model.prefetch_command(dest)}\n"
            "then re-run, or point the config at a local folder in the hub layout")


def offline_mode(error_names: set[str]) -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or "OfflineModeIsEnabled" in error_names


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="tafs download", description="fetch a hub model into a folder (once)")
    p.add_argument("--hub", required=True, help="repository id, owner/name")
    p.add_argument("--revision", default="main", help="branch, tag or commit")
    p.add_argument("--allow", nargs="+", action="extend", default=None, help="allow_patterns (files to fetch)")
    p.add_argument("--ignore", nargs="+", action="extend", default=None, help="ignore_patterns")
    p.add_argument("--out", required=True, help="the folder to write")
    a = p.parse_args(argv)
    model = HubModel(a.hub, a.revision, tuple(a.allow) if a.allow else None, tuple(a.ignore) if a.ignore else None)
    try:
        record = download(model, a.out)
    except DownloadError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"{model.repo}@{model.revision}: commit {record['commit']}, {len(record['files'])} files -> {a.out}")
    return record
