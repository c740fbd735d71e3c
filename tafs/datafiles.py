"""Data files pinned by URL and sha256 (prompt lists of public repositories), fetched once by the
``fetch_data`` rule into ``<hub.cache>/data/`` and checked before anything reads them.

In the config a prompt file is a path or ``{url: https://..., sha256: <64 hex>}``. The URL should pin a
commit (``raw.githubusercontent.com/<owner>/<repo>/<commit>/<path>``) so the bytes never change under the
sha256. A compute node without network finds the file already fetched by the rule, which runs on the host
that runs Snakemake (``localrule``); ``python -m tafs fetch-data --url U --sha256 H --out F`` pre-fetches by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from tafs.config import ConfigError
from tafs.io import atomic_path

_SHA = re.compile(r"^[0-9a-f]{64}$")
_KEYS = {"url", "sha256"}


class FetchError(RuntimeError):
    """A data file that could not be fetched or does not match its pin; the message says what to do."""


@dataclass(frozen=True)
class RemoteFile:
    url: str
    sha256: str

    @property
    def name(self) -> str:
        """Its file name in the cache: the sha256 prefix keeps two versions of one file apart."""
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", self.url.rstrip("/").rsplit("/", 1)[-1]) or "data"
        return f"{self.sha256[:16]}-{base}"

    def local_path(self, cache: str | Path) -> Path:
        return Path(cache) / "data" / self.name

    def to_json(self) -> dict[str, str]:
        return {"url": self.url, "sha256": self.sha256}


def parse_remote(value: Any, where: str) -> RemoteFile:
    if not isinstance(value, Mapping) or set(value) != _KEYS:
        raise ConfigError(f"{where}: expected a file path or {{url: https://..., sha256: <64 hex digits>}}, "
                          f"got {value!r}")
    url, sha = str(value["url"]), str(value["sha256"]).lower()
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"{where}.url: expected an http(s) URL, got {url!r}")
    if not _SHA.match(sha):
        raise ConfigError(f"{where}.sha256: expected 64 hex digits (`sha256sum FILE`), got {value['sha256']!r}")
    return RemoteFile(url, sha)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(remote: RemoteFile, dest: str | Path, timeout: float = 60.0) -> Path:
    """Download ``remote`` to ``dest`` (atomically) unless a file with the right sha256 is there already."""
    dest = Path(dest)
    if dest.is_file() and sha256_of(dest) == remote.sha256:
        return dest
    try:
        with urllib.request.urlopen(remote.url, timeout=timeout) as r:
            data = r.read()
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(f"cannot fetch {remote.url} ({getattr(e, 'reason', e)}). On a machine without network, "
                         f"fetch it elsewhere and copy it to {dest}: "
                         f"python -m tafs fetch-data --url {remote.url} --sha256 {remote.sha256} --out {dest}") from e
    got = hashlib.sha256(data).hexdigest()
    if got != remote.sha256:
        raise FetchError(f"{remote.url}: sha256 is {got}, the config pins {remote.sha256}: the file changed "
                         "upstream or the pin is wrong (pin a commit in the URL); nothing was written")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return dest


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="tafs fetch-data", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--sha256", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    remote = parse_remote({"url": a.url, "sha256": a.sha256}, "--url/--sha256")
    try:
        return fetch(remote, a.out)
    except FetchError as e:
        raise SystemExit(f"error: {e}") from e
