"""One place for content hashes: configs (checkpoint keys, MLflow experiments) and files (ingest fingerprints)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping


def canonical_json(obj: Any) -> str:
    """Key-sorted, whitespace-free JSON: equal configs give equal strings whatever their file layout."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def config_hash(config: Any, length: int | None = None) -> str:
    """sha256 hex digest of ``canonical_json(config)``, cut to ``length`` characters when given."""
    digest = hashlib.sha256(canonical_json(config).encode()).hexdigest()
    return digest[:length] if length else digest


def files_hash(files: Mapping[str, Path], salt: str = "") -> str:
    """sha256 over ``salt`` and each file's name (the mapping's key) and bytes, in name order."""
    h = hashlib.sha256(f"{salt}\0".encode())
    for name in sorted(files):
        h.update(name.encode() + b"\0")
        with open(files[name], "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()
