"""A loopback Hugging Face Hub that serves dataset repositories for reading: what ``datasets``
(``load_dataset_builder``, its data-file patterns) and ``huggingface_hub`` (``HfApi``,
``HfFileSystem``) call to resolve a dataset and stream its files by byte ranges.

Formats follow the installed ``huggingface_hub`` (hf_api.py, file_download.py, hf_file_system.py):

- ``GET  /api/datasets/{ns}/{name}[/revision/{rev}]`` -> ``{id, sha, siblings[{rfilename, size}], ...}``
- ``GET  /api/datasets/{ns}/{name}/tree/{rev}[/{path}]`` (``recursive``) -> ``[{type, path, oid, size}]``
- ``POST /api/datasets/{ns}/{name}/paths-info/{rev}`` (form or json ``paths``) -> the same entries
- ``HEAD|GET /datasets/{ns}/{name}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``,
  ``Content-Length`` and ``Range`` (206 with ``Content-Range``), as the Hub's file endpoint
- anything else: 404 with the Hub's ``X-Error-Code`` (``RepoNotFound``, ``EntryNotFound``,
  ``RevisionNotFound``).

A repository is a dict of path -> bytes; its commit sha is a hash of its files, so changed
files read as a new revision. Every request is recorded (method, path, Range header), so a test
can check that a file was read in pieces and never downloaded whole.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from fake_hub import git_blob_sha1
from fakeservers import LoopbackServer


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class DatasetRepo:
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def sha(self) -> str:
        h = hashlib.sha1()
        for p in sorted(self.files):
            h.update(p.encode() + b"\0" + git_blob_sha1(self.files[p]).encode())
        return h.hexdigest()

    def entries(self, prefix: str = "", recursive: bool = False) -> list[dict]:
        """Tree entries under ``prefix``: files, and the folders of the next level."""
        prefix = prefix.strip("/")
        out: dict[str, dict] = {}
        for p, data in sorted(self.files.items()):
            if prefix and not p.startswith(prefix + "/"):
                continue
            rest = p[len(prefix) + 1:] if prefix else p
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                if depth > 1 and not recursive:
                    break
                d = "/".join(([prefix] if prefix else []) + parts[:depth])
                out.setdefault(d, {"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(),
                                   "size": 0})
            if len(parts) == 1 or recursive:
                out[p] = self.entry(p)
        return list(out.values())

    def entry(self, path: str) -> dict:
        data = self.files[path]
        e = {"type": "file", "path": path, "oid": git_blob_sha1(data), "size": len(data)}
        if path.endswith(".parquet"):
            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return e


class FakeDatasetHub(LoopbackServer):
    methods = ("GET", "HEAD", "POST")

    def __init__(self):
        self.repos: dict[str, DatasetRepo] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._listen()

    # --- content and inspection -----------------------------------------------------------
    def add_folder(self, repo_id: str, folder: Path) -> DatasetRepo:
        """Serve every file under ``folder`` as dataset ``repo_id`` (the folder is its root)."""
        repo = DatasetRepo({p.relative_to(folder).as_posix(): p.read_bytes()
                            for p in sorted(folder.rglob("*")) if p.is_file()})
        self.repos[repo_id] = repo
        return repo

    def reads(self, suffix: str = ".parquet") -> list[Request]:
        """The GET requests for file bytes whose path ends with ``suffix``."""
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(suffix)]

    # --- plumbing -------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        url = urlsplit(h.path)
        with self._lock:
            self.requests.append(Request(h.command, unquote(url.path), h.headers.get("Range")))
        try:
            self._route(h, [unquote(p) for p in url.path.strip("/").split("/")], parse_qs(url.query), body)
        except Exception as e:  # a bug in the double must surface as a server error, not a hang
            self._json(h, 500, {"error": f"fake hub error: {type(e).__name__}: {e}"})

    def _json(self, h, status: int, obj, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def _missing(self, h, code: str, message: str) -> None:
        self._json(h, 404, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _repo(self, h, parts: list[str], at: int) -> tuple[str, DatasetRepo | None]:
        repo_id = "/".join(parts[at:at + 2])
        repo = self.repos.get(repo_id)
        if repo is None:
            self._missing(h, "RepoNotFound", "Repository not found")
        return repo_id, repo

    def _route(self, h, parts: list[str], qs: dict, body: bytes) -> None:
        if len(parts) >= 3 and parts[:2] == ["api", "datasets"]:
            repo_id, repo = self._repo(h, parts, 2)
            if repo is None:
                return
            action, rest = (parts[4] if len(parts) > 4 else ""), parts[5:]
            if not self._revision_ok(h, repo, rest[0] if rest else "main", action):
                return
            if action in ("", "revision"):
                return self._json(h, 200, self._info(repo_id, repo))
            if action == "tree":
                return self._json(h, 200, repo.entries("/".join(rest[1:]), qs.get("recursive", ["false"])[0]
                                                        in ("true", "True", "1")))
            if action == "paths-info":
                return self._paths_info(h, repo, body)
        if len(parts) >= 5 and parts[0] == "datasets" and parts[3] == "resolve":
            _, repo = self._repo(h, parts, 1)
            if repo is None or not self._revision_ok(h, repo, parts[4], "resolve"):
                return
            return self._file(h, repo, "/".join(parts[5:]))
        self._missing(h, "EntryNotFound", f"no such endpoint in the fake hub: {h.command} {'/'.join(parts)}")

    def _revision_ok(self, h, repo: DatasetRepo, rev: str, action: str) -> bool:
        if action in ("", "paths-info") or rev in ("main", repo.sha, quote(repo.sha)):
            return True
        self._missing(h, "RevisionNotFound", f"Invalid rev id: {rev}")
        return False

    def _info(self, repo_id: str, repo: DatasetRepo) -> dict:
        return {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "sha": repo.sha,
                "private": False, "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                "cardData": {}, "lastModified": "2026-11-25T00:00:00.000Z",
                "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(repo.files.items())]}

    def _paths_info(self, h, repo: DatasetRepo, body: bytes) -> None:
        try:
            paths = json.loads(body).get("paths", [])
        except ValueError:
            paths = parse_qs(body.decode()).get("paths", [])
        out = []
        for p in paths:
            p = p.strip("/")
            if p in repo.files:
                out.append(repo.entry(p))
            elif any(f.startswith(p + "/") for f in repo.files):
                out.append({"type": "directory", "path": p, "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0})
        self._json(h, 200, out)

    def _file(self, h, repo: DatasetRepo, path: str) -> None:
        if path not in repo.files:
            return self._missing(h, "EntryNotFound", f"{path} does not exist on this revision")
        data = repo.files[path]
        start, end, status = 0, len(data) - 1, 200
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            if a == "":  # a suffix: the last b bytes
                start = max(0, len(data) - int(b))
            else:
                start, end = int(a), min(int(b), len(data) - 1) if b else len(data) - 1
            status = 206
        payload = data[start:end + 1]
        h.send_response(status)
        etag = f'"{git_blob_sha1(data)}"'
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", "ETag": etag,
                   "X-Repo-Commit": repo.sha, "Content-Length": str(len(payload))}
        if path.endswith(".parquet"):
            headers.update({"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
                            "X-Linked-Size": str(len(data))})
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)
