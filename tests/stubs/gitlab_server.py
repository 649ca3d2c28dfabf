"""A small GitLab REST v4 stand-in on loopback that keeps GitLab's rules.

It serves only what tfgen's publisher uses, with the behaviour documented in
``/work/shared/notes.md`` (GitLab ``app/services/commits/create_service.rb``,
``app/models/merge_request.rb``, ``doc/api/commits.md``):

- auth by ``PRIVATE-TOKEN`` or ``Authorization: Bearer``; unknown token -> 401;
  a project the user cannot see -> 404 "404 Project Not Found"; a reporter writing -> 403.
- ``GET  /projects/:id``
- ``GET  /projects/:id/repository/branches/:branch`` (404 "404 Branch Not Found")
- ``DELETE /projects/:id/repository/branches/:branch``: refused (403) and recorded.
- ``GET|HEAD /projects/:id/repository/files/:path?ref=`` with ``content_sha256``,
  ``blob_id``, ``commit_id``, ``last_commit_id`` and base64 content.
- ``POST /projects/:id/repository/commits`` with ``branch``, ``start_branch``,
  ``actions`` (create, update, delete; ``last_commit_id`` checked) and GitLab's 400s;
  ``force`` is refused (403) and recorded: a branch is never reset here.
- ``POST /projects/:id/merge_requests`` (409 on a second open MR for the same source and
  target), ``GET /projects/:id/merge_requests?source_branch=&state=``,
  ``GET /projects/:id/merge_requests/:iid``.

- ``GET  /projects/:id/pipelines?ref=&sha=&order_by=id&sort=desc``.

Webhooks (``add_webhook``): ``merge``, ``close``, ``reopen`` and ``run_pipeline`` change
the state and POST a "Merge Request Hook" or "Pipeline Hook" to the hook's URL with the
headers and body GitLab's "Webhook events" documentation shows (``X-Gitlab-Event``,
``X-Gitlab-Token``, ``X-Gitlab-Instance``, ``X-Gitlab-Webhook-UUID``,
``X-Gitlab-Event-UUID``, ``Idempotency-Key``; ``object_kind``, ``object_attributes``,
``project``, ...). Each delivery is kept (``deliveries``) and can be sent again as
GitLab's retry or manual resend does: same ``Idempotency-Key`` and event UUID.

Faults: scripted (``fail_next``) or random (``chaos``): 500, 502, 503, 429 with
``Retry-After``, with ``RateLimit-Reset``, with neither, ``reset`` (drop the connection
before doing anything) and ``lost`` (do the work, then drop the connection). Every
request is recorded with its arrival time, and counted per (method, path pattern).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "FAULT_KINDS",
    "Commit",
    "Delivery",
    "Fault",
    "GitLabStub",
    "Project",
    "RequestRecord",
    "git_blob_id",
]

FAULT_KINDS = ("500", "502", "503", "429", "429-reset", "429-bare", "reset", "lost")

# Path patterns, as counted in ``GitLabStub.calls``.
P_PROJECT = "/projects/:id"
P_BRANCH = "/projects/:id/repository/branches/:branch"
P_FILE = "/projects/:id/repository/files/:path"
P_COMMITS = "/projects/:id/repository/commits"
P_MRS = "/projects/:id/merge_requests"
P_MR = "/projects/:id/merge_requests/:iid"
P_PIPELINES = "/projects/:id/pipelines"

READ_ACCESS = {"reporter", "developer", "maintainer"}
WRITE_ACCESS = {"developer", "maintainer"}


def git_blob_id(content: bytes) -> str:
    """Return git's blob id (SHA-1 of ``blob <len>\\0<content>``), as GitLab reports it."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Commit:
    """One commit: its full file tree, so trees of consecutive commits compare easily."""

    id: str
    parent_id: str | None
    tree: Mapping[str, bytes]
    message: str
    created_at: float


@dataclass
class Project:
    """A project: commits, branches (name -> head commit id), merge requests, members."""

    id: int
    path: str
    default_branch: str
    members: dict[str, str]
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    merge_requests: list[dict[str, Any]] = field(default_factory=list)

    def history(self, branch: str) -> list[Commit]:
        """Commits reachable from ``branch``'s head, oldest first."""
        out: list[Commit] = []
        sha: str | None = self.branches.get(branch)
        while sha is not None:
            commit = self.commits[sha]
            out.append(commit)
            sha = commit.parent_id
        return out[::-1]

    def open_merge_requests(self, source_branch: str) -> list[dict[str, Any]]:
        """Open merge requests from ``source_branch``."""
        return [
            mr
            for mr in self.merge_requests
            if mr["source_branch"] == source_branch and mr["state"] == "opened"
        ]


@dataclass(frozen=True)
class Fault:
    """A failure to inject; ``retry_after`` (seconds) goes into 429 headers."""

    kind: str
    retry_after: float = 1.0


@dataclass(frozen=True)
class RequestRecord:
    """One request as the stub saw it."""

    at: float  # time.time() on arrival
    method: str
    pattern: str
    path: str
    fault: str | None
    status: int | None  # None: the connection was dropped
    user: str | None = None  # who the token belonged to, if anyone
    headers: Mapping[str, str] = field(default_factory=dict)  # extra answer headers


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery: what GitLab POSTs, kept so it can be sent again."""

    url: str
    headers: Mapping[str, str]
    body: bytes

    def send(self, *, token: str | None = None, timeout: float = 10.0) -> int:
        """POST it (with ``token`` instead of the hook's secret, if given); the status."""
        headers = dict(self.headers)
        if token is not None:
            headers["X-Gitlab-Token"] = token
        req = urllib.request.Request(self.url, data=self.body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    @property
    def payload(self) -> dict[str, Any]:
        """The decoded body."""
        data: dict[str, Any] = json.loads(self.body)
        return data


class _HttpError(Exception):
    def __init__(self, status: int, message: Any, key: str = "message") -> None:
        super().__init__(status, message)
        self.status = status
        self.body = {key: message}


class GitLabStub:
    """GitLab REST v4 stand-in: state in memory, real HTTP on 127.0.0.1.

    Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(self, *, seed: int = 0, latency: float = 0.0, keep_alive: bool = False
                 ) -> None:
        """``latency``: seconds each request takes (GitLab's answer time, or a race
        window); ``keep_alive``: HTTP/1.1 persistent connections as GitLab keeps them
        (benchmarks; tests keep HTTP/1.0 so no socket outlives a test)."""
        self._lock = threading.RLock()
        self._users: dict[str, str] = {}  # token -> username
        self._user_ids: dict[str, int] = {}
        self.projects: dict[int, Project] = {}
        self._ids = itertools.count(1)
        self._shas = itertools.count(1)
        self.calls: Counter[tuple[str, str]] = Counter()
        self.requests: list[RequestRecord] = []
        self.refused: list[str] = []
        self._script: deque[tuple[str | None, str | None, Fault]] = deque()
        self._chaos_rate = 0.0
        self._chaos_kinds: tuple[str, ...] = ()
        self._chaos_retry_after = 0.0
        self._rng = random.Random(seed)
        self._after: list[tuple[str, str, Callable[[Project], None]]] = []
        self.latency = latency  # seconds each request takes, to widen race windows
        self.keep_alive = keep_alive
        self.hooks: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []
        self.pipelines: dict[int, list[dict[str, Any]]] = {}  # project id -> pipelines
        self._pipeline_ids = itertools.count(100)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> GitLabStub:
        """Listen on a free loopback port and serve in a background thread."""
        stub = self

        class Handler(_Handler):
            pass

        Handler.stub = stub
        if self.keep_alive:
            Handler.protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without TCP_NODELAY the body waits
            # for the client's delayed ACK (~40 ms) on a kept connection.
            Handler.disable_nagle_algorithm = True
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="gitlab-stub",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GitLabStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, as given to ``gitlab.Gitlab(url)``."""
        assert self._server is not None, "stub not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- seeding -----------------------------------------------------------------------

    def add_user(self, username: str, token: str) -> int:
        """Register a user and the token that authenticates as them."""
        with self._lock:
            self._users[token] = username
            return self._user_ids.setdefault(username, len(self._user_ids) + 1)

    def add_project(
        self,
        path: str,
        members: Mapping[str, str],
        *,
        default_branch: str = "main",
        files: Mapping[str, str] | None = None,
    ) -> Project:
        """Create a private project whose ``default_branch`` holds ``files``."""
        with self._lock:
            project = Project(
                id=next(self._ids), path=path, default_branch=default_branch, members=dict(members)
            )
            tree = {p: c.encode() for p, c in (files or {"README.md": "# infra\n"}).items()}
            root = self._new_commit(project, None, tree, "Initial commit")
            project.branches[default_branch] = root.id
            self.projects[project.id] = project
            return project

    # --- faults ------------------------------------------------------------------------

    def fail_next(
        self,
        kind: str,
        *,
        method: str | None = None,
        pattern: str | None = None,
        times: int = 1,
        retry_after: float = 1.0,
    ) -> None:
        """Script ``times`` faults for the next requests matching ``method`` and ``pattern``."""
        assert kind in FAULT_KINDS, kind
        with self._lock:
            for _ in range(times):
                self._script.append((method, pattern, Fault(kind, retry_after)))

    def chaos(
        self, rate: float, kinds: Iterable[str] = FAULT_KINDS, *, retry_after: float = 0.0
    ) -> None:
        """Fail a ``rate`` share of all requests with a random kind from ``kinds``."""
        with self._lock:
            self._chaos_rate = rate
            self._chaos_kinds = tuple(kinds)
            self._chaos_retry_after = retry_after

    def after_next(self, method: str, pattern: str, action: Callable[[Project], None]) -> None:
        """Run ``action(project)`` once, right after the next successful matching request:
        another actor changing GitLab between two of our calls."""
        with self._lock:
            self._after.append((method, pattern, action))

    def _run_after(self, method: str, pattern: str, project: Project) -> None:
        for i, (m, p, action) in enumerate(self._after):
            if m == method and p == pattern:
                del self._after[i]
                action(project)
                return

    def _pick_fault(self, method: str, pattern: str) -> Fault | None:
        with self._lock:
            for i, (m, p, fault) in enumerate(self._script):
                if (m is None or m == method) and (p is None or p == pattern):
                    del self._script[i]
                    return fault
            if self._chaos_rate and self._rng.random() < self._chaos_rate:
                return Fault(self._rng.choice(self._chaos_kinds), self._chaos_retry_after)
        return None

    # --- inspection --------------------------------------------------------------------

    def count(self, method: str | None = None, pattern: str | None = None) -> int:
        """Requests seen matching ``method`` and ``pattern`` (None matches any)."""
        with self._lock:
            return sum(
                n
                for (m, p), n in self.calls.items()
                if (method is None or m == method) and (pattern is None or p == pattern)
            )

    def reset_counts(self) -> None:
        """Forget recorded requests (state stays)."""
        with self._lock:
            self.calls.clear()
            self.requests.clear()

    def project(self, path: str) -> Project:
        """The project at ``path``."""
        return next(p for p in self.projects.values() if p.path == path)

    # --- state changes (called with the lock held) -------------------------------------

    def _new_commit(
        self, project: Project, parent: str | None, tree: Mapping[str, bytes], message: str
    ) -> Commit:
        seed = f"{next(self._shas)}:{parent}:{message}".encode()
        sha = hashlib.sha1(seed, usedforsecurity=False).hexdigest()
        commit = Commit(sha, parent, dict(tree), message, time.time())
        project.commits[sha] = commit
        return commit

    def _last_commit_of(self, project: Project, head: str, path: str) -> str:
        """The newest commit reachable from ``head`` that changed ``path``."""
        commit = project.commits[head]
        while commit.parent_id is not None:
            parent = project.commits[commit.parent_id]
            if parent.tree.get(path) != commit.tree.get(path):
                return commit.id
            commit = parent
        return commit.id

    # --- request handling --------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any, str | None]:
        """Route one request; return (status, headers, json body, fault kind or None)."""
        if self.latency:
            time.sleep(self.latency)
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        pattern, params = _route(method, split.path)
        with self._lock:
            self.calls[(method, pattern)] += 1
        fault = self._pick_fault(method, pattern)
        if fault is not None and fault.kind != "lost":
            return (*self._fault_answer(fault), fault.kind)
        try:
            payload: dict[str, Any] = json.loads(body) if body else {}
            payload.update({k: v for k, v in query.items() if k not in payload})
            with self._lock:
                status, out = self._dispatch(method, pattern, params, headers, payload)
        except _HttpError as e:
            status, out = e.status, e.body
        extra = {"X-Per-Page": "20", "X-Page": "1"} if isinstance(out, list) else {}
        return status, extra, out, fault.kind if fault else None

    def _fault_answer(self, fault: Fault) -> tuple[int, dict[str, str], Any]:
        if fault.kind == "reset":
            return 0, {}, None
        if fault.kind.startswith("429"):
            headers: dict[str, str] = {}
            if fault.kind == "429":
                headers["Retry-After"] = f"{fault.retry_after:g}"
            elif fault.kind == "429-reset":
                headers["RateLimit-Reset"] = str(int(time.time() + fault.retry_after + 1))
            return 429, headers, {"message": "429 Too Many Requests"}
        status = int(fault.kind)
        return status, {}, {"message": f"{status} Internal Server Error"}

    def _authenticate(self, headers: Mapping[str, str]) -> str:
        token = headers.get("private-token")
        auth = headers.get("authorization", "")
        if token is None and auth.lower().startswith("bearer "):
            token = auth[7:]
        user = self._users.get(token or "")
        if user is None:
            raise _HttpError(401, "401 Unauthorized")
        return user

    def _find_project(self, ref: str, user: str, *, write: bool = False) -> Project:
        project = next(
            (p for p in self.projects.values() if str(p.id) == ref or p.path == ref), None
        )
        access = project.members.get(user) if project else None
        if project is None or access not in READ_ACCESS:
            raise _HttpError(404, "404 Project Not Found")
        if write and access not in WRITE_ACCESS:
            raise _HttpError(403, "403 Forbidden")
        return project

    def _dispatch(
        self,
        method: str,
        pattern: str,
        params: dict[str, str],
        headers: Mapping[str, str],
        data: dict[str, Any],
    ) -> tuple[int, Any]:
        if pattern == "?":
            raise _HttpError(404, "404 Not Found", key="error")
        user = self._authenticate(headers)
        write = method in {"POST", "PUT", "DELETE"}
        project = self._find_project(params["id"], user, write=write)
        status, out = self._serve(method, pattern, params, data, project, user)
        self._run_after(method, pattern, project)
        return status, out

    def _serve(
        self,
        method: str,
        pattern: str,
        params: dict[str, str],
        data: dict[str, Any],
        project: Project,
        user: str,
    ) -> tuple[int, Any]:
        if pattern == P_PROJECT:
            return 200, self._project_json(project)
        if pattern == P_BRANCH and method == "GET":
            return 200, self._branch(project, params["branch"])
        if pattern == P_BRANCH and method == "DELETE":
            self.refused.append(f"DELETE branch {params['branch']}")
            raise _HttpError(403, "403 Forbidden - tfgen stub refuses to delete branches")
        if pattern == P_FILE:
            return 200, self._file(project, params["path"], str(data.get("ref", "")))
        if pattern == P_COMMITS and method == "POST":
            return 201, self._create_commit(project, data)
        if pattern == P_MRS and method == "POST":
            return 201, self._create_mr(project, user, data)
        if pattern == P_MRS and method == "GET":
            return 200, self._list_mrs(project, data)
        if pattern == P_PIPELINES and method == "GET":
            return 200, self._list_pipelines(project, data)
        if pattern == P_MR and method == "GET":
            iid = int(params["iid"])
            mr = next((m for m in project.merge_requests if m["iid"] == iid), None)
            if mr is None:
                raise _HttpError(404, "404 Not found")
            return 200, mr
        raise _HttpError(405, "405 Method Not Allowed", key="error")

    def _project_json(self, project: Project) -> dict[str, Any]:
        return {
            "id": project.id,
            "path_with_namespace": project.path,
            "default_branch": project.default_branch,
            "web_url": f"{self.url}/{project.path}",
        }

    def _commit_json(self, project: Project, commit: Commit) -> dict[str, Any]:
        title = commit.message.split("\n", 1)[0]
        return {
            "id": commit.id,
            "short_id": commit.id[:8],
            "title": title,
            "message": commit.message,
            "parent_ids": [commit.parent_id] if commit.parent_id else [],
            "web_url": f"{self.url}/{project.path}/-/commit/{commit.id}",
        }

    def _branch(self, project: Project, name: str) -> dict[str, Any]:
        head = project.branches.get(name)
        if head is None:
            raise _HttpError(404, "404 Branch Not Found")
        return {
            "name": name,
            "merged": False,
            "protected": name == project.default_branch,
            "default": name == project.default_branch,
            "commit": self._commit_json(project, project.commits[head]),
            "web_url": f"{self.url}/{project.path}/-/tree/{name}",
        }

    def _file(self, project: Project, path: str, ref: str) -> dict[str, Any]:
        head = project.branches.get(ref) or (ref if ref in project.commits else None)
        if head is None:
            raise _HttpError(404, "404 Commit Not Found")
        content = project.commits[head].tree.get(path)
        if content is None:
            raise _HttpError(404, "404 File Not Found")
        return {
            "file_name": path.rsplit("/", 1)[-1],
            "file_path": path,
            "size": len(content),
            "encoding": "base64",
            "content": base64.b64encode(content).decode(),
            "content_sha256": hashlib.sha256(content).hexdigest(),
            "ref": ref,
            "blob_id": git_blob_id(content),
            "commit_id": head,
            "last_commit_id": self._last_commit_of(project, head, path),
        }

    def _create_commit(self, project: Project, data: dict[str, Any]) -> dict[str, Any]:
        branch = data.get("branch")
        if not branch:
            raise _HttpError(400, "branch is missing", key="error")
        if data.get("force"):
            self.refused.append(f"force commit on {branch}")
            raise _HttpError(403, "403 Forbidden - tfgen stub refuses force")
        start = data.get("start_branch")
        if branch in project.branches:
            if start and start != branch:
                raise _HttpError(
                    400,
                    f"A branch called '{branch}' already exists. "
                    "Switch to that branch in order to make changes",
                )
            base = project.branches[branch]
        elif start and start in project.branches:
            base = project.branches[start]
        else:
            raise _HttpError(400, "You can only create or edit files when you are on a branch")
        tree = dict(project.commits[base].tree)
        for action in data.get("actions") or []:
            self._apply(project, base, tree, action)
        commit = self._new_commit(project, base, tree, str(data.get("commit_message", "")))
        project.branches[branch] = commit.id
        return self._commit_json(project, commit)

    def _apply(self, project: Project, base: str, tree: dict[str, bytes], action: Any) -> None:
        kind = action.get("action")
        path = action.get("file_path")
        if kind not in {"create", "update", "delete"} or not path:
            raise _HttpError(400, "actions[0][action] does not have a valid value", key="error")
        if kind == "create" and path in tree:
            raise _HttpError(400, "A file with this name already exists")
        if kind in {"update", "delete"} and path not in tree:
            raise _HttpError(400, "A file with this name doesn't exist")
        last = action.get("last_commit_id")
        if kind != "create" and last and last != self._last_commit_of(project, base, path):
            raise _HttpError(
                400,
                "You are attempting to update a file that has changed since you started "
                "editing it.",
            )
        if kind == "delete":
            del tree[path]
            return
        content = action.get("content") or ""
        if action.get("encoding") == "base64":
            tree[path] = base64.b64decode(content)
        else:
            tree[path] = content.encode()

    def _create_mr(self, project: Project, user: str, data: dict[str, Any]) -> dict[str, Any]:
        source, target = data.get("source_branch"), data.get("target_branch")
        if not source or not target or not data.get("title"):
            raise _HttpError(400, "source_branch, target_branch, title are required", key="error")
        if source not in project.branches or target not in project.branches:
            raise _HttpError(400, ["Source or target branch does not exist"])
        for mr in project.open_merge_requests(source):
            if mr["target_branch"] == target:
                raise _HttpError(
                    409,
                    [
                        f"Another open merge request already exists for this source branch: "
                        f"!{mr['iid']}"
                    ],
                )
        labels = data.get("labels") or []
        if isinstance(labels, str):
            labels = [label for label in labels.split(",") if label]
        iid = len(project.merge_requests) + 1
        mr = {
            "id": 1000 * project.id + iid,
            "iid": iid,
            "project_id": project.id,
            "title": data["title"],
            "description": data.get("description") or "",
            "state": "opened",
            "source_branch": source,
            "target_branch": target,
            "labels": labels,
            "author": {"username": user},
            "assignee_id": data.get("assignee_id"),
            "reviewer_ids": list(data.get("reviewer_ids") or []),
            "web_url": f"{self.url}/{project.path}/-/merge_requests/{iid}",
            "sha": project.branches[source],
            "merge_commit_sha": None,
            "squash_commit_sha": None,
            "merged_at": None,
            "closed_at": None,
            "created_at": _iso(time.time()),
            "updated_at": _iso(time.time()),
        }
        project.merge_requests.append(mr)
        return mr

    def _list_mrs(self, project: Project, query: dict[str, Any]) -> list[dict[str, Any]]:
        out = list(project.merge_requests)
        for key in ("source_branch", "target_branch", "state"):
            if query.get(key) and not (key == "state" and query[key] == "all"):
                out = [mr for mr in out if mr[key] == query[key]]
        return sorted(out, key=lambda mr: -mr["iid"])

    # --- webhooks (GitLab's "Webhook events") ------------------------------------------

    def add_webhook(self, url: str, token: str | None, *, events: Iterable[str] = (
            "merge_requests", "pipeline")) -> None:
        """Register a project (or group) hook: where to POST, its secret, which events."""
        with self._lock:
            self.hooks.append({"url": url, "token": token, "events": set(events),
                               "uuid": str(uuid.uuid4())})

    def open_merge_request(self, path: str, branch: str, *, user: str = "alice",
                           files: Mapping[str, str] | None = None, send: bool = True
                           ) -> dict[str, Any]:
        """Someone (not tfgen) pushes ``branch`` with one commit and opens its MR."""
        with self._lock:
            project = self.project(path)
            base = project.branches[project.default_branch]
            tree = {**project.commits[base].tree,
                    **{p: c.encode() for p, c in (files or {"other.tf": "# x\n"}).items()}}
            project.branches[branch] = self._new_commit(project, base, tree, "by hand").id
            mr = self._create_mr(project, user, {"source_branch": branch, "title": "by hand",
                                                 "target_branch": project.default_branch})
        self._hook("merge_requests", self._mr_payload(project, mr, "open", user), send)
        return mr

    def merge(self, path: str, iid: int, *, user: str = "alice", send: bool = True
              ) -> list[Delivery]:
        """Merge MR ``iid`` (a merge commit on the target) and send its "merge" event."""
        with self._lock:
            project = self.project(path)
            mr = self._mr(project, iid)
            source_head = project.branches[mr["source_branch"]]
            target = mr["target_branch"]
            commit = self._new_commit(
                project, project.branches[target], project.commits[source_head].tree,
                f"Merge branch '{mr['source_branch']}' into '{target}'")
            project.branches[target] = commit.id
            mr.update(state="merged", merge_commit_sha=commit.id, merged_at=_iso(time.time()),
                      updated_at=_iso(time.time()))
        return self._hook("merge_requests", self._mr_payload(project, mr, "merge", user), send)

    def close(self, path: str, iid: int, *, user: str = "alice", send: bool = True
              ) -> list[Delivery]:
        """Close MR ``iid`` and send its "close" event."""
        return self.mr_event(path, iid, "close", user=user, send=send,
                             change={"state": "closed", "closed_at": _iso(time.time())})

    def reopen(self, path: str, iid: int, *, user: str = "alice", send: bool = True
               ) -> list[Delivery]:
        """Reopen MR ``iid`` and send its "reopen" event."""
        return self.mr_event(path, iid, "reopen", user=user, send=send,
                             change={"state": "opened", "closed_at": None})

    def mr_event(self, path: str, iid: int, action: str, *, user: str = "alice",
                 send: bool = True, change: Mapping[str, Any] | None = None) -> list[Delivery]:
        """Apply ``change`` to MR ``iid`` (none: as it is) and send an ``action`` event
        about it (``update``, ``approved``, ...)."""
        with self._lock:
            project = self.project(path)
            mr = self._mr(project, iid)
            if change:
                mr.update(change, updated_at=_iso(time.time()))
        return self._hook("merge_requests", self._mr_payload(project, mr, action, user), send)

    def run_pipeline(self, path: str, ref: str, sha: str, status: str, *,
                     pipeline_id: int | None = None, user: str = "alice", send: bool = True
                     ) -> list[Delivery]:
        """Record a pipeline on ``ref`` at ``sha`` now in ``status`` and send its event
        (the same ``pipeline_id`` again: that pipeline's status changed)."""
        with self._lock:
            project = self.project(path)
            pipelines = self.pipelines.setdefault(project.id, [])
            found = next((p for p in pipelines if p["id"] == pipeline_id), None)
            now = _iso(time.time(), utc_words=True)
            if found is None:
                found = {"id": pipeline_id or next(self._pipeline_ids),
                         "iid": len(pipelines) + 1, "project_id": project.id, "ref": ref,
                         "sha": sha, "source": "push", "created_at": now}
                pipelines.append(found)
            found.update(status=status, updated_at=now,
                         finished_at=now if status in {"success", "failed", "canceled"}
                         else None)
            payload = self._pipeline_payload(project, found, user)
        return self._hook("pipeline", payload, send)

    def _mr(self, project: Project, iid: int) -> dict[str, Any]:
        return next(m for m in project.merge_requests if m["iid"] == iid)

    def _list_pipelines(self, project: Project, query: dict[str, Any]) -> list[dict[str, Any]]:
        out = [p for p in self.pipelines.get(project.id, [])
               if all(not query.get(k) or p[k] == query[k] for k in ("ref", "sha", "status"))]
        out = sorted(out, key=lambda p: p["id"], reverse=query.get("sort", "desc") == "desc")
        return [{**p, "web_url": f"{self.url}/{project.path}/-/pipelines/{p['id']}"}
                for p in out]

    def _hook(self, kind: str, payload: dict[str, Any], send: bool) -> list[Delivery]:
        """One delivery per hook that wants ``kind``, as GitLab sends it."""
        event = {"merge_requests": "Merge Request Hook", "pipeline": "Pipeline Hook"}[kind]
        event_uuid = str(uuid.uuid4())
        body = json.dumps(payload).encode()
        out = []
        for hook in list(self.hooks):
            if kind not in hook["events"]:
                continue
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "GitLab/17.6.0",
                "X-Gitlab-Event": event,
                "X-Gitlab-Webhook-UUID": hook["uuid"],
                "X-Gitlab-Instance": self.url,
                "X-Gitlab-Event-UUID": event_uuid,
                "Idempotency-Key": event_uuid,
            }
            if hook["token"] is not None:
                headers["X-Gitlab-Token"] = hook["token"]
            delivery = Delivery(hook["url"], headers, body)
            with self._lock:
                self.deliveries.append(delivery)
            if send:
                delivery.send()
            out.append(delivery)
        return out

    def _project_hook_json(self, project: Project) -> dict[str, Any]:
        web = f"{self.url}/{project.path}"
        host = self.url.split("//", 1)[-1]
        return {
            "id": project.id,
            "name": project.path.rsplit("/", 1)[-1],
            "description": "",
            "web_url": web,
            "avatar_url": None,
            "git_ssh_url": f"git@{host}:{project.path}.git",
            "git_http_url": f"{web}.git",
            "namespace": project.path.split("/", 1)[0],
            "visibility_level": 0,
            "path_with_namespace": project.path,
            "default_branch": project.default_branch,
            "ci_config_path": "",
            "homepage": web,
            "url": f"{web}.git",
            "ssh_url": f"git@{host}:{project.path}.git",
            "http_url": f"{web}.git",
        }

    def _user_json(self, user: str) -> dict[str, Any]:
        return {"id": self._user_ids.get(user, 0), "name": user.title(), "username": user,
                "avatar_url": None, "email": "[REDACTED]"}

    def _mr_payload(self, project: Project, mr: dict[str, Any], action: str, user: str
                    ) -> dict[str, Any]:
        head = project.commits[project.branches.get(mr["source_branch"], mr["sha"])]
        project_json = self._project_hook_json(project)
        state_id = {"opened": 1, "closed": 2, "merged": 3, "locked": 4}[mr["state"]]
        attributes = {
            "id": mr["id"],
            "iid": mr["iid"],
            "target_branch": mr["target_branch"],
            "source_branch": mr["source_branch"],
            "source_project_id": project.id,
            "author_id": self._user_ids.get(mr["author"]["username"], 0),
            "assignee_ids": [mr["assignee_id"]] if mr.get("assignee_id") else [],
            "assignee_id": mr.get("assignee_id"),
            "reviewer_ids": mr.get("reviewer_ids", []),
            "title": mr["title"],
            "created_at": mr["created_at"],
            "updated_at": mr["updated_at"],
            "last_edited_at": None,
            "last_edited_by_id": None,
            "milestone_id": None,
            "state_id": state_id,
            "state": mr["state"],
            "blocking_discussions_resolved": True,
            "work_in_progress": False,
            "draft": False,
            "first_contribution": False,
            "merge_status": "can_be_merged",
            "target_project_id": project.id,
            "description": mr["description"],
            "prepared_at": mr["created_at"],
            "total_time_spent": 0,
            "time_change": 0,
            "human_total_time_spent": None,
            "human_time_change": None,
            "human_time_estimate": None,
            "url": mr["web_url"],
            "source": project_json,
            "target": project_json,
            "last_commit": {
                "id": head.id,
                "message": head.message,
                "title": head.message.split("\n", 1)[0],
                "timestamp": _iso(head.created_at),
                "url": f"{self.url}/{project.path}/-/commit/{head.id}",
                "author": {"name": "tfgen", "email": "tfgen@localhost"},
            },
            "labels": [],
            "merge_commit_sha": mr.get("merge_commit_sha"),
            "action": action,
            "detailed_merge_status": "mergeable" if mr["state"] == "opened" else "not_open",
        }
        return {
            "object_kind": "merge_request",
            "event_type": "merge_request",
            "user": self._user_json(user),
            "project": project_json,
            "repository": {"name": project_json["name"], "url": project_json["url"],
                           "description": "", "homepage": project_json["homepage"]},
            "object_attributes": attributes,
            "labels": [],
            "changes": {"state_id": {"previous": 1, "current": state_id}}
            if action in {"merge", "close", "reopen"} else {},
            "assignees": [],
            "reviewers": [],
        }

    def _pipeline_payload(self, project: Project, pipeline: dict[str, Any], user: str
                          ) -> dict[str, Any]:
        commit = project.commits[pipeline["sha"]]
        project_json = self._project_hook_json(project)
        return {
            "object_kind": "pipeline",
            "object_attributes": {
                "id": pipeline["id"],
                "iid": pipeline["iid"],
                "name": f"Pipeline for branch: {pipeline['ref']}",
                "ref": pipeline["ref"],
                "tag": False,
                "sha": pipeline["sha"],
                "before_sha": commit.parent_id or "0" * 40,
                "source": pipeline["source"],
                "status": pipeline["status"],
                "detailed_status": pipeline["status"],
                "stages": ["plan", "apply"],
                "created_at": pipeline["created_at"],
                "finished_at": pipeline["finished_at"],
                "duration": 42 if pipeline["finished_at"] else None,
                "queued_duration": 1,
                "variables": [],
                "url": f"{self.url}/{project.path}/-/pipelines/{pipeline['id']}",
            },
            "merge_request": None,
            "user": self._user_json(user),
            "project": {k: project_json[k] for k in (
                "id", "name", "description", "web_url", "avatar_url", "git_ssh_url",
                "git_http_url", "namespace", "visibility_level", "path_with_namespace",
                "default_branch")},
            "commit": {
                "id": commit.id,
                "message": commit.message,
                "timestamp": _iso(commit.created_at),
                "url": f"{self.url}/{project.path}/-/commit/{commit.id}",
                "author": {"name": "tfgen", "email": "tfgen@localhost"},
            },
            "builds": [],
        }

    def record(self, record: RequestRecord) -> None:
        """Keep one request record (called by the handler)."""
        with self._lock:
            self.requests.append(record)

    def user_of(self, headers: Mapping[str, str]) -> str | None:
        """The user a request's token belongs to, if any."""
        try:
            return self._authenticate(headers)
        except _HttpError:
            return None


def _iso(at: float, *, utc_words: bool = False) -> str:
    """GitLab's timestamps: ISO 8601 in the API, ``2016-08-12 15:23:28 UTC`` in
    pipeline hooks."""
    stamp = time.gmtime(at)
    if utc_words:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", stamp)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp)


def _route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """Match a raw (still percent-encoded) path to a pattern and its decoded params."""
    prefix = "/api/v4/projects/"
    if not path.startswith(prefix):
        return "?", {}
    parts = path[len(prefix) :].split("/")
    params = {"id": unquote(parts[0])}
    rest = parts[1:]
    if not rest:
        return P_PROJECT, params
    if rest[:2] == ["repository", "branches"] and len(rest) == 3:
        return P_BRANCH, {**params, "branch": unquote(rest[2])}
    if rest[:2] == ["repository", "files"] and len(rest) == 3:
        return P_FILE, {**params, "path": unquote(rest[2])}
    if rest == ["repository", "commits"]:
        return P_COMMITS, params
    if rest == ["merge_requests"]:
        return P_MRS, params
    if rest == ["pipelines"]:
        return P_PIPELINES, params
    if rest[0] == "merge_requests" and len(rest) == 2 and rest[1].isdigit():
        return P_MR, {**params, "iid": rest[1]}
    return "?", {}


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.0: one request per connection, so no keep-alive socket outlives a test."""

    stub: GitLabStub
    timeout = 10

    def _serve(self) -> None:
        arrived = time.time()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, payload, fault = self.stub.handle(self.command, self.path, headers, body)
        pattern = _route(self.command, urlsplit(self.path).path)[0]
        dropped = fault in {"reset", "lost"}
        self.stub.record(
            RequestRecord(
                at=arrived,
                method=self.command,
                pattern=pattern,
                path=self.path,
                fault=fault,
                status=None if dropped else status,
                user=self.stub.user_of(headers),
                headers=extra,
            )
        )
        if dropped:
            # Close without a byte of answer: the client cannot tell whether we acted.
            self.close_connection = True
            return
        data = b"" if self.command == "HEAD" else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read ``GitLabStub.requests`` instead."""
