"""A hub-compatible HTTP server on 127.0.0.1 for tests: serves local folders as repositories (or refuses a gated
one), so that ``huggingface_hub`` runs its real client code path through ``HF_ENDPOINT`` without the internet.

Only what ``snapshot_download`` asks for: the repository info, its file tree and each file (HEAD and GET, with
``Range: bytes=N-``). ``cuts[file] = n`` makes the server drop the connection after the first ``n`` bytes of that
file and answer 503 to a request that starts at or past them (an interrupted transfer); ``ranges`` logs each file
GET with its Range header.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

SHA = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, Path], gated: set[str] = frozenset()):
        self.repos, self.gated = dict(repos), set(gated)
        self.requests: list[str] = []
        self.ranges: list[tuple[str, str | None]] = []  # (file GET path, its Range header)
        self.cuts: dict[str, int] = {}
        self.sha = SHA
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub.handle(self, body=False)

            def do_GET(self):
                hub.handle(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the endpoints ------------------------------------------------------------------------------
    def files(self, repo: str) -> dict[str, Path]:
        root = self.repos[repo]
        return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}

    def handle(self, req: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(req.path).path)
        self.requests.append(f"{req.command} {path}")
        if m := re.fullmatch(r"/api/models/(.+?)/revision/([^/]+)", path):
            return self.info(req, m[1])
        if m := re.fullmatch(r"/api/models/(.+?)/tree/([^/]+)(/.*)?", path):
            return self.tree(req, m[1])
        if m := re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path):
            return self.file(req, m[1], m[3], body)
        self.send(req, 404, {"error": "not found"})

    def _missing(self, req, repo: str) -> bool:
        if repo not in self.repos:
            self.send(req, 404, {"error": "Repository Not Found"}, {"X-Error-Code": "RepoNotFound"})
            return True
        if repo in self.gated:
            self.send(req, 401, {"error": f"Access to model {repo} is restricted. You must have access to it and "
                                          "be authenticated to access it. Please log in."},
                      {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this model is restricted"})
            return True
        return False

    def info(self, req, repo: str) -> None:
        if repo not in self.repos:
            return self.send(req, 404, {"error": "Repository Not Found"}, {"X-Error-Code": "RepoNotFound"})
        siblings = [{"rfilename": f} for f in self.files(repo)]
        self.send(req, 200, {"_id": repo, "id": repo, "modelId": repo, "sha": self.sha, "siblings": siblings,
                             "private": False, "gated": "manual" if repo in self.gated else False,
                             "disabled": False, "tags": [], "downloads": 0, "likes": 0})

    def tree(self, req, repo: str) -> None:
        if self._missing(req, repo):
            return
        entries = [{"type": "file", "oid": hashlib.sha1(p.read_bytes()).hexdigest(), "size": p.stat().st_size,
                    "path": f} for f, p in self.files(repo).items()]
        self.send(req, 200, entries)

    def file(self, req, repo: str, name: str, body: bool) -> None:
        if self._missing(req, repo):
            return
        path = self.files(repo).get(name)
        if path is None:
            return self.send(req, 404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        data = path.read_bytes()
        asked = req.headers.get("Range")
        if body:
            self.ranges.append((f"{repo}/{name}", asked))
        start = int(m[1]) if asked and (m := re.fullmatch(r"bytes=(\d+)-", asked)) else 0
        cut = self.cuts.get(name)
        if cut is not None and start >= cut:
            return self.send(req, 503, {"error": "Service Unavailable"})
        req.send_response(206 if start else 200)
        headers = {"X-Repo-Commit": self.sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                   "Content-Length": str(len(data) - start), "Content-Type": "application/octet-stream"}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        for k, v in headers.items():
            req.send_header(k, v)
        req.end_headers()
        if body:
            req.wfile.write(data[start:cut])
        if body and cut is not None:  # drop the connection mid-body
            req.wfile.flush()
            req.connection.shutdown(socket.SHUT_RDWR)
            req.close_connection = True

    @staticmethod
    def send(req, status: int, obj, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(data)
