"""Models from the Hugging Face hub as DAG inputs: a hub id with a revision (and optional file patterns),
fetched once into a configurable folder by the ``download`` rule, or a local folder used as it is.

In the config a model is either a path (a local folder in the hub layout) or a mapping
``{hub: owner/name, revision: main, allow_patterns: [...], ignore_patterns: [...]}``. The download goes through
``huggingface_hub.snapshot_download`` (``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE`` apply as usual) into
a temporary folder renamed into place only when complete. Failures end in one message that names the
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
        pats = "".join(f" --include '{p}'" for p in self.allow_patterns or ())
        return f"hf download {self.repo} --revision {self.revision}{pats} --local-dir {dest}"


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


def local_path(model: str | HubModel, cache: str | Path) -> Path:
    """Where the jobs find the model: the folder itself, or its download under ``cache``."""
    return Path(model) if isinstance(model, str) else Path(cache) / model.name


def download(model: HubModel, dest: str | Path) -> Path:
    """Fetch ``model`` into ``dest`` (atomically: a finished folder or none)."""
    from huggingface_hub import snapshot_download

    from tafs.io import atomic_dir

    dest = Path(dest)
    try:
        with atomic_dir(dest) as tmp:
            snapshot_download(repo_id=model.repo, revision=model.revision, local_dir=str(tmp),
                              allow_patterns=list(model.allow_patterns) if model.allow_patterns else None,
                              ignore_patterns=list(model.ignore_patterns) if model.ignore_patterns else None)
    except Exception as e:  # noqa: BLE001 - every failure becomes one message that says what to do
        raise DownloadError(explain(e, model, dest)) from e
    return dest


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
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or "OfflineModeIsEnabled" in names
    reason = "HF_HUB_OFFLINE is set" if offline else f"no connection to {endpoint} ({_first_line(error)})"
    return (f"cannot download {what}: {reason}. Pre-fetch it on a machine with network (a login node):\n"
            f"  {model.prefetch_command(dest)}\n"
            "then re-run, or point the config at a local folder in the hub layout")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="tafs download", description="fetch a hub model into a folder (once)")
    p.add_argument("--hub", required=True, help="repository id, owner/name")
    p.add_argument("--revision", default="main", help="branch, tag or commit")
    p.add_argument("--allow", nargs="+", action="extend", default=None, help="allow_patterns (files to fetch)")
    p.add_argument("--ignore", nargs="+", action="extend", default=None, help="ignore_patterns")
    p.add_argument("--out", required=True, help="the folder to write")
    a = p.parse_args(argv)
    model = HubModel(a.hub, a.revision, tuple(a.allow) if a.allow else None, tuple(a.ignore) if a.ignore else None)
    try:
        return download(model, a.out)
    except DownloadError as e:
        raise SystemExit(f"error: {e}") from None
