"""A hub model fetched file by file into a staging folder that survives a failure, so that the next attempt
resumes where the last one stopped, and renamed into place only when every file is there.

Why not ``snapshot_download``: in the installed huggingface_hub (2.x) a file is downloaded into a temporary file
unique to the process and deleted when the process fails (huggingface_hub PR #4228); ``http_get`` resumes a
dropped connection only within the same process. A 34-47 GB model whose job is killed at 90 % would start over.
So this module does what ``snapshot_download`` does (``repo_info`` for the commit, ``list_repo_tree`` at that
commit, ``filter_repo_objects`` for the patterns) and fetches each file with huggingface_hub's ``http_get``, whose
``resume_size`` sends ``Range: bytes=N-`` for the bytes already on disk. Every file is fetched at the resolved
commit, so a branch that moves during (or between) attempts cannot mix two commits: partial files of another
commit are discarded.

Layout: ``<cache>/.<name>.partial/`` holds the finished files and ``.cache/tafs/<file>.incomplete`` the partial
ones; when all are there, ``.tafs-download.json`` (repo, revision asked, commit, files, time) is written last and
the folder is renamed to ``<cache>/<name>``. The staging folder lies outside the ``download`` rule's output, which
Snakemake deletes after a failed job.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from tafs.io import replace_dir, read_json, write_json

log = logging.getLogger(__name__)

MARKER = ".tafs-download.json"  # written last: the model's record (and proof the download finished)
STATE = Path(".cache") / "tafs"  # inside the staging folder: partial files and the commit they belong to


def staging(dest: Path) -> Path:
    """Where the files of ``dest`` gather until it is complete (kept after a failure, to resume)."""
    return dest.with_name(f".{dest.name}.partial")


def fetch(repo: str, revision: str, dest: Path, allow: list[str] | None = None,
          ignore: list[str] | None = None) -> dict[str, Any]:
    """Download ``repo`` at ``revision`` into ``dest`` (resuming a previous attempt); returns the record."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import WeakFileLock

    api = HfApi()
    commit = api.repo_info(repo, revision=revision).sha
    if not commit:
        raise RuntimeError(f"the hub returned no commit for {repo}@{revision}")
    files = listing(api, repo, commit, allow, ignore)
    part = staging(dest)
    part.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(part.with_name(part.name + ".lock")):  # another process fetching it: wait, then reuse
        done = recorded(dest)
        if done and (done.get("repo"), done.get("commit"), done.get("files")) == (repo, commit, files):
            return done
        start(part, repo, commit)
        for path, size in files.items():
            fetch_file(repo, commit, path, size, part)
        prune(part, files)
        record = {"repo": repo, "revision": revision, "commit": commit, "files": files,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        shutil.rmtree(part / STATE, ignore_errors=True)
        if (part / ".cache").is_dir() and not any((part / ".cache").iterdir()):
            (part / ".cache").rmdir()
        write_json(part / MARKER, record)
        publish(part, dest)
    return record


def listing(api: Any, repo: str, commit: str, allow: list[str] | None,
            ignore: list[str] | None) -> dict[str, int]:
    """The files to fetch at ``commit`` (path -> size in bytes), filtered by the patterns."""
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import filter_repo_objects

    tree = {f.path: f.size for f in api.list_repo_tree(repo, revision=commit, recursive=True)
            if isinstance(f, RepoFile)}
    kept = filter_repo_objects(tree, allow_patterns=allow, ignore_patterns=ignore)
    return {p: int(tree[p]) for p in sorted(kept)}


def start(part: Path, repo: str, commit: str) -> None:
    """Begin or resume in ``part``: what an attempt at another commit left there is discarded."""
    state = part / STATE / "commit.json"
    if state.is_file():
        before = read_json(state)
        if before == {"repo": repo, "commit": commit}:
            log.info("resuming the download of %s@%s in %s", repo, commit[:12], part)
            return
        log.warning("%s: the partial download is of commit %s, the hub now serves %s: starting over", part,
                    before.get("commit"), commit)
    if part.exists():
        shutil.rmtree(part)
    write_json(state, {"repo": repo, "commit": commit})


def fetch_file(repo: str, commit: str, path: str, size: int, part: Path) -> None:
    """One file into ``part``, continuing from its ``.incomplete`` bytes (an HTTP Range request)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    final = part / path
    if final.is_file() and final.stat().st_size == size:
        return
    incomplete = part / STATE / f"{path}.incomplete"
    incomplete.parent.mkdir(parents=True, exist_ok=True)
    if incomplete.is_file() and incomplete.stat().st_size > size:
        incomplete.unlink()  # not a prefix of this file
    with open(incomplete, "ab") as fh:
        if fh.tell():
            log.info("%s: resuming at %d of %d bytes", path, fh.tell(), size)
        http_get(hf_hub_url(repo, path, revision=commit), fh, resume_size=fh.tell(), headers=build_hf_headers(),
                 expected_size=size, displayed_filename=path)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(incomplete, final)


def prune(part: Path, files: dict[str, int]) -> None:
    """Remove what an earlier attempt with other file patterns left that this download does not hold."""
    for p in sorted(part.rglob("*"), reverse=True):
        rel = p.relative_to(part)
        if rel.parts[:2] == STATE.parts or rel.parts == (".cache",):
            continue
        if p.is_file() and rel.as_posix() not in files:
            p.unlink()
        elif p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def publish(part: Path, dest: Path) -> None:
    """Rename the complete folder into place (replacing an older download of the same name)."""
    replace_dir(part, dest)


def partial_bytes(dest: Path) -> int:
    """Bytes an interrupted download of ``dest`` has kept for the next attempt."""
    part = staging(dest)
    if not part.is_dir():
        return 0
    return sum(p.stat().st_size for p in part.rglob("*") if p.is_file() and p.name != "commit.json")


def recorded(folder: str | Path) -> dict[str, Any] | None:
    """The download record of a model folder (None for a local folder or one fetched by other means)."""
    marker = Path(folder) / MARKER
    return read_json(marker) if marker.is_file() else None


def model_commit(folder: str | Path) -> str | None:
    """The hub commit a model folder was downloaded at, for the runs to log (None when not a download)."""
    rec = recorded(folder)
    return rec.get("commit") if isinstance(rec, dict) else None
