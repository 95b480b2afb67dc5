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
- ``GET  /api/{type}s/{ns}/{name}/tree/{rev}``  (``list_repo_tree``: the files at a branch or
  commit, with their git blob ids and, for LFS files, sha256; how a publish reads back its commit)

Every request is recorded (method, path, headers, body). Hub API calls must carry
``Authorization: Bearer <token>``; anything else gets the Hub's 401. Uploads go through LFS
only when ``HF_HUB_DISABLE_XET`` is set in the client (the Xet storage protocol is not faked).

A hostile Hub: ``hub.hostile[endpoint]`` (an endpoint name of :func:`endpoint_of`: create,
settings, branch, validate-yaml, preupload, lfs-batch, lfs-put, lfs-verify, commit, revision,
tree) holds :class:`Hostile` answers given in turn, one per request to that endpoint; when the list
is empty the Hub answers as above. Empty by default, so the double behaves as before.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlsplit

from fakeservers import LoopbackServer

PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _card_data(readme: bytes) -> dict | None:
    """A README's YAML front matter as the Hub's ``cardData`` (None without one)."""
    import yaml

    text = readme.decode("utf-8", "replace")
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return None
    try:
        data = yaml.safe_load(text[4:].split("\n---", 1)[0])
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


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
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> files


def endpoint_of(method: str, path: str) -> str | None:
    """The name :attr:`FakeHub.hostile` knows a request by (None: not a Hub endpoint)."""
    if path == "/api/repos/create":
        return "create"
    if path == "/api/validate-yaml":
        return "validate-yaml"
    if path.startswith("/__lfs/"):
        return "lfs-verify" if path == "/__lfs/verify" else "lfs-put"
    if path.endswith(".git/info/lfs/objects/batch"):
        return "lfs-batch"
    parts = path.strip("/").split("/")
    if len(parts) >= 5 and parts[0] == "api" and parts[1] in ("models", "datasets", "spaces"):
        return parts[4]  # settings, branch, preupload, commit, revision, tree
    return None


@dataclass
class Hostile:
    """One hostile answer. Without ``real`` the Hub answers without doing the work (nothing
    stored); with it the work is done first (a commit lands) and only its answer is mangled.
    A field left None keeps the honest answer's (or, without ``real``, 200 and ``{}``)."""

    status: int | None = None
    body: bytes | None = None            # replaces the body
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # added: Retry-After, Location
    content_length: int | None = None    # a lying Content-Length (the connection then closes)
    cut: float | None = None             # send this fraction of the body, then close
    reset: bool = False                  # an RST instead of (the rest of) an answer
    stall: float = 0.0                   # seconds of silence before answering
    real: bool = False
    reshape: object = None               # with ``real``: a function of the honest JSON answer

    def _reshaped(self, body: bytes) -> bytes:
        try:
            return json.dumps(self.reshape(json.loads(body))).encode()
        except ValueError:  # not JSON (an LFS PUT's empty answer): left as it was
            return body

    def answer(self, h: BaseHTTPRequestHandler, serve) -> None:
        status, headers, body = _captured(h, serve) if self.real else \
            (200, {"Content-Type": "application/json"}, b"{}")
        if self.stall:
            time.sleep(self.stall)
        if self.reset:
            return _reset(h)
        if self.reshape is not None and self.body is None:
            body = self._reshaped(body)
        body = self.body if self.body is not None else body
        headers = {**{k: v for k, v in headers.items() if k.lower() not in _RESENT},
                   **({"Content-Type": self.content_type} if self.content_type else {}), **self.headers}
        self._send(h, self.status or status, headers, body)

    def _send(self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
        lies = self.content_length is not None or self.cut is not None
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body) if self.content_length is None else self.content_length))
        if lies:
            h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body if self.cut is None else body[:int(len(body) * self.cut)])
        h.wfile.flush()
        h.close_connection = h.close_connection or lies


_RESENT = ("content-length", "connection", "server", "date")  # written again when answering


def _captured(h: BaseHTTPRequestHandler, serve) -> tuple[int, dict[str, str], bytes]:
    """The honest answer ``serve()`` writes, taken apart instead of sent."""
    real_wfile, h.wfile = h.wfile, io.BytesIO()
    try:
        serve()
        h.flush_headers()
        raw = h.wfile.getvalue()
    finally:
        h.wfile = real_wfile
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Close the connection with an RST (not a FIN): the client sees "connection reset"."""
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.connection.close()
    h.close_connection = True


class FakeHub(LoopbackServer):
    methods = ("GET", "POST", "PUT", "DELETE")

    def __init__(self, token: str, lfs_suffixes=(".safetensors", ".bin"), lfs_min_size=1 << 20):
        self.token = token
        self.lfs_suffixes = tuple(lfs_suffixes)
        self.lfs_min_size = lfs_min_size
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[Recorded] = []
        self.hostile: dict[str, list[Hostile]] = {}
        self._lock = threading.Lock()
        self._listen()
        default_handle_error = self.httpd.handle_error

        def handle_error(request, client_address):
            # a client that hung up (after a stall, a reset or a lying answer) is no error of the
            # double, and socketserver's traceback would land in the captured stderr of the test
            if not isinstance(sys.exc_info()[1], OSError):
                default_handle_error(request, client_address)
        self.httpd.handle_error = handle_error

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
            queue = self.hostile.get(endpoint_of(h.command, path) or "")
            hostile = queue.pop(0) if queue else None
        if hostile is not None:
            try:
                return hostile.answer(h, lambda: self._serve(h, path, body))
            except OSError:  # the client gave up (its timeout, during a stall): nobody to answer
                h.close_connection = True
                return
        self._serve(h, path, body)

    def _serve(self, h: BaseHTTPRequestHandler, path: str, body: bytes) -> None:
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
            if action == "tree" and h.command == "GET":
                return self._tree(h, repo, parts[5] if len(parts) > 5 else "main")
            if rest not in repo.branches:
                return self._error(h, 404, f"Invalid rev id: {rest}", "RevisionNotFound")
            if action == "preupload" and h.command == "POST":
                return self._preupload(h, repo, rest, json.loads(body))
            if action == "commit" and h.command == "POST":
                return self._commit(h, repo, rest, body)
            if action == "revision" and h.command == "GET":
                files = repo.branches[rest]
                card = _card_data(files.get("README.md", b""))  # the Hub parses the card's metadata
                return self._send(h, 200, {"id": repo_id, "sha": repo.heads[rest],
                                           "private": repo.private, "cardData": card,
                                           "tags": list(card.get("tags") or []) if card else [],
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

    def _tree(self, h, repo: Repo, rev: str) -> None:
        """Every file at a branch or commit (recursive listing; folders and paging left out)."""
        files = repo.branches.get(rev, repo.snapshots.get(rev))
        if files is None:
            return self._error(h, 404, f"Invalid rev id: {rev}", "RevisionNotFound")
        out = []
        for path, data in sorted(files.items()):
            entry = {"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)}
            if path in repo.lfs_paths:
                pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:"
                           f"{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n").encode()
                entry.update(oid=git_blob_sha1(pointer), lfs={"oid": hashlib.sha256(data).hexdigest(),
                                                             "size": len(data), "pointerSize": len(pointer)})
            out.append(entry)
        return self._send(h, 200, out)

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
        repo.snapshots[sha] = dict(files)
        repo.heads[branch] = sha
        repo.commits.append({"branch": branch, "summary": header.get("summary"),
                             "paths": changed, "sha": sha})
        url = f"{self.url}/{PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}"
        return self._send(h, 200, {"commitUrl": url, "commitOid": sha, "pullRequestUrl": None})
