"""A loopback test double for the Hugging Face Hub endpoints ``huggingface_hub`` calls for
``create_repo``, ``update_repo_settings``, ``create_branch`` and ``upload_folder``.

Formats follow the installed ``huggingface_hub`` (hf_api.py, _commit_api.py, lfs.py):

- ``POST /api/repos/create``  json ``{name, organization, type?, visibility?}`` -> ``{url}``;
  409 (with ``url``) when the repo exists
- ``PUT  /api/{type}s/{ns}/{name}/settings``  json ``{visibility|private}``
- ``POST /api/{type}s/{ns}/{name}/branch/{branch}``  409 when it exists
- ``POST /api/validate-yaml``  json ``{content, repoType}``: README front matter must parse
- ``POST /api/{type}s/{ns}/{name}/preupload/{rev}``  -> ``files[{path, uploadMode, shouldIgnore, oid}]``
- ``POST /{prefix}{ns}/{name}.git/info/lfs/objects/batch``  (git-lfs batch API, basic transfer)
- ``PUT  /__lfs/{oid}`` (the pre-signed storage URL: no Authorization) and ``POST /__lfs/verify``
- ``POST /api/{type}s/{ns}/{name}/commit/{rev}``  NDJSON: header, file (base64), lfsFile, deletedFile
- ``GET  /api/{type}s/{ns}/{name}/revision/{rev}``  (used when a commit would be empty)

Every request is recorded (method, path, headers, body). Hub API calls must carry
``Authorization: Bearer <token>``; anything else gets the Hub's 401. Uploads go through LFS
only when ``HF_HUB_DISABLE_XET`` is set in the client (the Xet storage protocol is not faked).
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from fakeservers import LoopbackServer

PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    heads: dict[str, str] = field(default_factory=lambda: {"main": "0" * 40})
    lfs_paths: set[str] = field(default_factory=set)
    commits: list[dict] = field(default_factory=list)


class FakeHub(LoopbackServer):
    methods = ("GET", "POST", "PUT", "DELETE")

    def __init__(self, token: str, lfs_suffixes=(".safetensors", ".bin"), lfs_min_size=1 << 20):
        self.token = token
        self.lfs_suffixes = tuple(lfs_suffixes)
        self.lfs_min_size = lfs_min_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._listen()

    # --- inspection helpers -------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> dict[str, bytes]:
        return dict(self.repo(repo_id, repo_type).branches[branch])

    def api_requests(self) -> list[Recorded]:
        return [r for r in self.requests if not r.path.startswith("/__lfs/")]

    # --- plumbing -----------------------------------------------------------------------
    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(h.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += h.rfile.read(size)
                h.rfile.readline()
        n = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(n) if n else b""

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, obj=None, headers: dict | None = None) -> None:
        body = json.dumps(obj if obj is not None else {}).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _error(self, h, status: int, message: str, code: str | None = None) -> None:
        self._send(h, status, {"error": message}, {"X-Error-Message": message,
                                                    **({"X-Error-Code": code} if code else {})})

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = self._read_body(h)
        path = urlsplit(h.path).path
        rec = Recorded(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}, body)
        with self._lock:
            self.requests.append(rec)
        try:
            if path.startswith("/__lfs/") and h.command == "PUT":
                return self._lfs_put(h, path.rsplit("/", 1)[1], body)
            if h.headers.get("Authorization") != f"Bearer {self.token}":
                return self._error(h, 401, "Invalid credentials in Authorization header")
            with self._lock:
                self._route(h, path, body)
        except Exception as e:  # a bug in the double must surface as a server error, not a hang
            self._error(h, 500, f"fake hub error: {type(e).__name__}: {e}")

    def _route(self, h, path: str, body: bytes) -> None:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if h.command == "POST" and path == "/api/repos/create":
            return self._create_repo(h, json.loads(body))
        if h.command == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(h, json.loads(body))
        if h.command == "POST" and path == "/__lfs/verify":
            oid = json.loads(body)["oid"]
            return self._send(h, 200 if oid in self.lfs_store else 404, {})
        if path.endswith(".git/info/lfs/objects/batch") and h.command == "POST":
            return self._lfs_batch(h, json.loads(body))
        if len(parts) >= 5 and parts[0] == "api" and parts[1] in ("models", "datasets", "spaces"):
            repo_type = parts[1][:-1]
            repo_id, action, rest = f"{parts[2]}/{parts[3]}", parts[4], "/".join(parts[5:])
            repo = self.repos.get((repo_type, repo_id))
            if repo is None:
                return self._error(h, 404, "Repository not found", "RepoNotFound")
            if action == "settings" and h.command == "PUT":
                payload = json.loads(body)
                if "visibility" in payload:
                    repo.private = payload["visibility"] == "private"
                elif "private" in payload:
                    repo.private = bool(payload["private"])
                return self._send(h, 200, {})
            if action == "branch" and h.command == "POST":
                if rest in repo.branches:
                    return self._error(h, 409, f"Reference already exists: refs/heads/{rest}")
                repo.branches[rest] = dict(repo.branches["main"])
                repo.heads[rest] = repo.heads["main"]
                return self._send(h, 200, {})
            if rest not in repo.branches:
                return self._error(h, 404, f"Invalid rev id: {rest}", "RevisionNotFound")
            if action == "preupload" and h.command == "POST":
                return self._preupload(h, repo, rest, json.loads(body))
            if action == "commit" and h.command == "POST":
                return self._commit(h, repo, rest, body)
            if action == "revision" and h.command == "GET":
                files = repo.branches[rest]
                return self._send(h, 200, {"id": repo_id, "sha": repo.heads[rest],
                                           "private": repo.private,
                                           "siblings": [{"rfilename": f} for f in sorted(files)]})
        return self._error(h, 404, f"no such endpoint in the fake hub: {h.command} {path}")

    # --- endpoints ----------------------------------------------------------------------
    def _create_repo(self, h, payload: dict) -> None:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{self.url}/{PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return self._send(h, 409, {"error": f"You already created this {repo_type} repo",
                                       "url": url}, {"X-Error-Message": "repo exists"})
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.repos[(repo_type, repo_id)] = Repo(repo_type, repo_id, private=private)
        return self._send(h, 200, {"url": url, "name": repo_id})

    def _validate_yaml(self, h, payload: dict) -> None:
        import yaml

        content = payload.get("content", "")
        if not content.startswith("---\n"):
            return self._send(h, 200, {"errors": [], "warnings": [{"message": "empty metadata"}]})
        try:
            yaml.safe_load(content.split("---\n", 2)[1])
        except Exception as e:
            return self._send(h, 400, {"errors": [{"message": str(e)}]})
        return self._send(h, 200, {"errors": [], "warnings": []})

    def _is_lfs(self, path: str, size: int) -> bool:
        return path.endswith(self.lfs_suffixes) or size >= self.lfs_min_size

    def _preupload(self, h, repo: Repo, branch: str, payload: dict) -> None:
        files = repo.branches[branch]
        out = []
        for f in payload["files"]:
            mode = "lfs" if self._is_lfs(f["path"], f["size"]) else "regular"
            existing = files.get(f["path"])
            oid = None
            if existing is not None:
                oid = (hashlib.sha256(existing).hexdigest() if mode == "lfs"
                       else git_blob_sha1(existing))
            out.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return self._send(h, 200, {"files": out, "commitOid": repo.heads[branch]})

    def _lfs_batch(self, h, payload: dict) -> None:
        objects = []
        for o in payload["objects"]:
            entry = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if o["oid"] not in self.lfs_store:
                entry["actions"] = {"upload": {"href": f"{self.url}/__lfs/{o['oid']}"},
                                    "verify": {"href": f"{self.url}/__lfs/verify"}}
            objects.append(entry)
        return self._send(h, 200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, h, oid: str, body: bytes) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(h, 400, "content does not match its oid")
        with self._lock:
            self.lfs_store[oid] = body
        return self._send(h, 200, {})

    def _commit(self, h, repo: Repo, branch: str, body: bytes) -> None:
        lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._error(h, 400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        files = dict(repo.branches[branch])
        changed = []
        for op in lines[1:]:
            key, val = op["key"], op["value"]
            if key == "file":
                files[val["path"]] = base64.b64decode(val["content"])
                repo.lfs_paths.discard(val["path"])
            elif key == "lfsFile":
                if val["oid"] not in self.lfs_store:
                    return self._error(h, 422, f"LFS object {val['oid']} was never uploaded")
                files[val["path"]] = self.lfs_store[val["oid"]]
                repo.lfs_paths.add(val["path"])
            elif key == "deletedFile":
                files.pop(val["path"], None)
            else:
                return self._error(h, 400, f"unsupported commit operation {key!r}")
            changed.append(val["path"])
        sha = hashlib.sha1(f"{repo.heads[branch]}{len(repo.commits)}{header}".encode()).hexdigest()
        repo.branches[branch] = files
        repo.heads[branch] = sha
        repo.commits.append({"branch": branch, "summary": header.get("summary"),
                             "paths": changed, "sha": sha})
        url = f"{self.url}/{PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}"
        return self._send(h, 200, {"commitUrl": url, "commitOid": sha, "pullRequestUrl": None})
