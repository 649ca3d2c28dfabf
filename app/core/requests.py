"""Request records: what became of an APEX request after its jobs, and their state machine.

One record per ``<cloud_id>/<resource_type>/<request_id>`` tfgen ran a (non dry-run) job
for. Three sources move it, each through a step function here, applied by
``Lifecycle`` (``app/core/lifecycle.py``) inside the store's compare-and-set ``update``:

- jobs: started -> ``generating``; SUCCESS -> ``mr_open`` (a merge request) or
  ``published`` (the git publisher); FAILURE/REVOKED -> ``failed``, unless the merge
  request is still open (the state stays ``mr_open``, ``history`` says why);
- GitLab's webhooks and the reconciler: merge request ``merge`` -> ``merged``, ``close``
  -> ``closed``, ``open``/``reopen`` -> ``mr_open``; the target branch's pipeline for the
  merge commit ``success`` -> ``applied``, ``failed`` -> ``apply_failed``; with the git
  publisher a branch whose tip reached the target -> ``merged``.

Webhooks and the reconciler never move a record backwards: each state has a rank
(``RANK``) and an event may only raise it (close and reopen trade places at one rank),
only for the merge request the record knows (its ``iid``), and a pipeline only for the
merge commit, newer than the last one taken. A ``merge`` followed by a late ``update``
or ``close`` stays ``merged``. Only a new job starts a record's life again.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any, Protocol

import redis
import sqlalchemy as sa
from redis.client import Pipeline
from sqlalchemy import exc as sa_exc

from app.core.boundary import RedisCalls, sql_engine
from app.errors import DatabaseUnavailable

__all__ = [
    "RANK",
    "RECONCILE_STATES",
    "STATES",
    "RequestRecord",
    "RequestStore",
    "Step",
    "branch_merged_step",
    "job_step",
    "merge_request_step",
    "pipeline_step",
    "request_key",
    "request_store_from_url",
]

STATES = ("generating", "failed", "published", "mr_open", "merged", "closed", "applied",
          "apply_failed")
RANK = {"generating": 0, "failed": 0, "published": 1, "mr_open": 1, "closed": 1,
        "merged": 2, "applied": 3, "apply_failed": 3}
# States whose next move happens in GitLab or the remote: the reconciler looks at these.
RECONCILE_STATES = frozenset({"published", "mr_open", "merged"})
HISTORY_KEPT = 100
JOBS_KEPT = 50


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stamp(value: str | None) -> str:
    """A GitLab timestamp (``2016-08-12 15:26:29 UTC`` in hooks, ISO 8601 in the API) as
    ISO 8601 UTC, so that the two compare; empty when absent or unreadable."""
    if not value:
        return ""
    text = value.strip().replace(" UTC", "+00:00").replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return ""
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def request_key(cloud_id: str, resource_type: str, request_id: int) -> str:
    """The record's key, ``<cloud_id>/<resource_type>/<request_id>``."""
    return f"{cloud_id}/{resource_type}/{int(request_id)}"


@dataclass
class RequestRecord:
    """One APEX request as tfgen knows it (the design's request document)."""

    cloud_id: str
    resource_type: str
    request_id: int
    state: str = "generating"
    merge_request: dict[str, Any] | None = None
    branch: dict[str, Any] | None = None
    owner: str = ""
    owners: list[str] = field(default_factory=list)
    last_job: str | None = None
    jobs: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    updated_at: str = field(default_factory=_utcnow)

    @property
    def key(self) -> str:
        """``<cloud_id>/<resource_type>/<request_id>``."""
        return request_key(self.cloud_id, self.resource_type, self.request_id)

    def document(self) -> dict[str, Any]:
        """The request document the API answers."""
        return asdict(self)

    def to_json(self) -> str:
        """Serialise for the store."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> RequestRecord:
        """Rebuild from ``to_json`` output."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(raw).items() if k in names})

    def move(self, state: str, source: str, detail: str) -> bool:
        """Go to ``state`` (recording it in ``history``); return whether it changed."""
        changed = state != self.state
        self.state = state
        self.note(source, detail)
        return changed

    def note(self, source: str, detail: str) -> None:
        """Add a history line for the current state."""
        self.updated_at = _utcnow()
        self.history = [*self.history, {"at": self.updated_at, "state": self.state,
                                        "source": source, "detail": detail}][-HISTORY_KEPT:]


# A step looks at a record (None: not there yet) and returns the record to store and
# whether its state changed, or None to change nothing.
Step = Callable[[RequestRecord | None], tuple[RequestRecord, bool] | None]


# --- steps -------------------------------------------------------------------------------


def job_step(job: Mapping[str, Any], *, target_branch: str,
             project_path: Callable[[str | None], str | None]) -> Step:
    """The step for a job's status change (``job`` is its document).

    Args:
        job: The job document after the change.
        target_branch: Where the git publisher's branches are meant to land.
        project_path: Turns the result's ``remote`` (the project's web URL) into the
            project's path, the key GitLab's webhooks name it by.
    """
    request = job["request"]
    status = job["status"]

    def step(current: RequestRecord | None) -> tuple[RequestRecord, bool] | None:
        if current is None and status != "STARTED" and not job.get("started_at"):
            return None  # canceled or expired in the queue: tfgen never worked on it
        record = current or RequestRecord(request["cloud_id"], request["resource_type"],
                                          int(request["request_id"]), owner=job["owner"])
        record.owner = job["owner"]
        if job["owner"] not in record.owners:
            record.owners = [*record.owners, job["owner"]]
        if job["uuid"] not in record.jobs:
            record.jobs = [*record.jobs, job["uuid"]][-JOBS_KEPT:]
        record.last_job = job["uuid"]
        tag = f"job {job['uuid']}"
        if status == "STARTED":
            if current is not None and current.state == "generating":
                return record, False  # another job of a request already generating
            changed = record.move("generating", "job", f"{tag} started")
        elif status == "SUCCESS":
            changed = _job_succeeded(record, job, tag, target_branch, project_path)
        else:  # FAILURE or REVOKED
            error = job.get("error") or {}
            what = f"{tag} ended {status} ({error.get('code', 'INTERNAL')})"
            mr = record.merge_request or {}
            if mr.get("state") == "opened":
                record.note("job", f"{what}; merge request !{mr.get('iid')} is still open")
                changed = record.move("mr_open", "job", "merge request still open")
            else:
                changed = record.move("failed", "job", what)
        return record, changed or current is None  # a new record is news too

    return step


def _job_succeeded(record: RequestRecord, job: Mapping[str, Any], tag: str,
                   target_branch: str, project_path: Callable[[str | None], str | None]
                   ) -> bool:
    result = job.get("result") or {}
    commit = (result.get("commit") or {}).get("sha")
    mr = result.get("merge_request")
    if mr:
        known = record.merge_request or {}
        same = known.get("iid") == mr["iid"] and known.get("source_branch") == mr["source_branch"]
        record.merge_request = {
            "project_id": known.get("project_id") if same else None,
            "project_path": project_path(result.get("remote")),
            "iid": mr["iid"], "url": mr["url"], "source_branch": mr["source_branch"],
            "target_branch": mr["target_branch"],
            "merge_commit_sha": known.get("merge_commit_sha") if same else None,
            "state": known.get("state", "opened") if same else "opened",
            "pipeline": known.get("pipeline") if same else None,
        }
        record.branch = None
        if same and RANK[record.state] > RANK["mr_open"]:
            record.note("job", f"{tag} succeeded; merge request !{mr['iid']} already "
                        f"{record.state}")
            return False
        return record.move("mr_open", "job", f"{tag} succeeded: merge request !{mr['iid']}")
    record.merge_request = None
    record.branch = {"name": result.get("branch"), "target_branch": target_branch,
                     "commit_sha": commit, "remote": result.get("remote")}
    return record.move("published", "job", f"{tag} succeeded: {result.get('branch')} "
                       f"at {str(commit)[:12]}")


def merge_request_step(*, iid: int, action: str, source: str, project_id: int | None = None,
                       merge_commit_sha: str | None = None) -> Step:
    """The step for a merge request event (a webhook's ``action``, or the reconciler's
    reading of the MR's ``state`` turned into ``merge``/``close``/``reopen``)."""
    targets = {"merge": "merged", "close": "closed", "reopen": "mr_open", "open": "mr_open"}
    mr_states = {"merge": "merged", "close": "closed", "reopen": "opened", "open": "opened"}

    def step(current: RequestRecord | None) -> tuple[RequestRecord, bool] | None:
        if current is None or not current.merge_request:
            return None
        mr = dict(current.merge_request)
        if mr.get("iid") != iid:
            return None  # an older merge request of this branch, or one tfgen did not open
        target = targets.get(action)
        if target is None:
            return None  # update, approved, ...: nothing that moves the request
        if project_id is not None:
            mr["project_id"] = project_id
        rank, now = RANK[target], RANK[current.state]
        if mr.get("state") == "merged" or rank < now or (
                rank == now and current.state not in {"mr_open", "closed"}):
            return None  # late or replayed: never backwards
        if target == current.state:
            return None
        mr["state"] = mr_states[action]
        if action == "merge":
            mr["merge_commit_sha"] = merge_commit_sha or mr.get("merge_commit_sha")
        current.merge_request = mr
        detail = f"merge request !{iid} {action}"
        if action == "merge" and mr["merge_commit_sha"]:
            detail += f" as {mr['merge_commit_sha'][:12]}"
        return current, current.move(target, source, detail)

    return step


def pipeline_step(*, pipeline_id: int, status: str, sha: str, ref: str, source: str,
                  finished_at: str | None = None) -> Step:
    """The step for the target branch's pipeline on the merge commit."""
    target = {"success": "applied", "failed": "apply_failed"}.get(status)

    def step(current: RequestRecord | None) -> tuple[RequestRecord, bool] | None:
        if target is None or current is None or not current.merge_request:
            return None
        mr = dict(current.merge_request)
        if current.state not in {"merged", "applied", "apply_failed"} \
                or mr.get("merge_commit_sha") != sha or mr.get("target_branch") != ref:
            return None
        seen = mr.get("pipeline") or {}
        finished = _stamp(finished_at)
        newer = (pipeline_id, finished) > (int(seen.get("id") or 0),
                                           seen.get("finished_at") or "")
        if not newer:
            return None  # an older pipeline, or this one's earlier news arriving late
        mr["pipeline"] = {"id": pipeline_id, "status": status, "finished_at": finished}
        current.merge_request = mr
        return current, current.move(target, source,
                                     f"pipeline {pipeline_id} on {ref} {status}")

    return step


def branch_merged_step(*, target_sha: str, source: str) -> Step:
    """The step for the git publisher's branch found inside its target branch."""

    def step(current: RequestRecord | None) -> tuple[RequestRecord, bool] | None:
        if current is None or current.state != "published" or not current.branch:
            return None
        current.branch = {**current.branch, "merged_into": target_sha}
        name, target = current.branch.get("name"), current.branch.get("target_branch")
        return current, current.move("merged", source, f"{name} merged into {target} "
                                     f"(at {target_sha[:12]})")

    return step


# --- stores ------------------------------------------------------------------------------


class RequestStore(Protocol):
    """Where request records live."""

    def get(self, key: str) -> RequestRecord | None:
        """The record, or None."""

    def update(self, key: str, step: Step) -> tuple[RequestRecord | None, bool]:
        """Apply ``step`` atomically (compare-and-set); return the record and whether its
        state changed. ``(current, False)`` when the step changed nothing."""

    def list(self, *, state: str | None = None, cloud_id: str | None = None,
             resource_type: str | None = None, limit: int = 100) -> builtins.list[RequestRecord]:
        """Records, most recently changed first."""

    def due(self, limit: int) -> builtins.list[RequestRecord]:
        """Up to ``limit`` records in ``RECONCILE_STATES``, least recently checked first;
        each returned one counts as checked now."""

    def link(self, alias: str, key: str) -> None:
        """Make ``alias`` (a branch, a merge commit) find the record ``key``."""

    def resolve(self, alias: str) -> str | None:
        """The record key an alias names."""

    def claim_delivery(self, delivery: str, ttl: int) -> bool:
        """True the first time ``delivery`` is claimed within ``ttl`` seconds."""

    def release_delivery(self, delivery: str) -> None:
        """Forget a claim (its delivery could not be queued)."""


class RedisRequestStore:
    """Records as JSON strings; a sorted set by change time, one for the reconciler."""

    def __init__(self, client: redis.Redis, *, prefix: str = "tfgen") -> None:
        self.client = client
        self.prefix = prefix
        self._call = RedisCalls(client, "request store", DatabaseUnavailable)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:request:{key}"

    @property
    def _by_time(self) -> str:
        return f"{self.prefix}:requests"

    @property
    def _due(self) -> str:
        return f"{self.prefix}:requests:due"

    def get(self, key: str) -> RequestRecord | None:
        """GET the record."""
        raw = self._call(self.client.get, self._key(key))
        return RequestRecord.from_json(raw) if raw else None

    def update(self, key: str, step: Step) -> tuple[RequestRecord | None, bool]:
        """WATCH, run the step, MULTI/EXEC; again on a race."""
        name = self._key(key)

        def attempt(pipe: Pipeline) -> tuple[RequestRecord | None, bool]:
            raw = pipe.get(name)
            current = RequestRecord.from_json(raw) if raw else None
            outcome = step(current)
            if outcome is None:
                pipe.reset()  # type: ignore[no-untyped-call]
                return current, False
            record, changed = outcome
            score = dt.datetime.now(dt.UTC).timestamp()
            pipe.multi()
            pipe.set(name, record.to_json())
            pipe.zadd(self._by_time, {key: score})
            if record.state in RECONCILE_STATES:
                pipe.zadd(self._due, {key: 0}, nx=True)
            else:
                pipe.zrem(self._due, key)
            return record, changed

        return self._call.transaction(attempt, name)

    def list(self, *, state: str | None = None, cloud_id: str | None = None,
             resource_type: str | None = None, limit: int = 100) -> builtins.list[RequestRecord]:
        """Newest first, filtered here (records are few: one per APEX request)."""
        out: builtins.list[RequestRecord] = []
        for record in self._newest():
            if (state and record.state != state) or (cloud_id and record.cloud_id != cloud_id) \
                    or (resource_type and record.resource_type != resource_type):
                continue
            out.append(record)
            if len(out) >= limit:
                break
        return out

    def _newest(self, page: int = 200) -> Iterator[RequestRecord]:
        start = 0
        while True:
            keys = self._call(self.client.zrevrange, self._by_time, start, start + page - 1)
            if not keys:
                return
            raws = self._call(self.client.mget, [self._key(_text(k)) for k in keys])
            yield from (RequestRecord.from_json(r) for r in raws if r)
            start += page

    def due(self, limit: int) -> builtins.list[RequestRecord]:
        """The least recently checked first; each gets checked-at now."""
        keys = [_text(k) for k in self._call(self.client.zrange, self._due, 0, limit - 1)]
        if not keys:
            return []
        now = dt.datetime.now(dt.UTC).timestamp()
        self._call(self.client.zadd, self._due, dict.fromkeys(keys, now), xx=True)
        records = (self.get(k) for k in keys)
        return [r for r in records if r is not None and r.state in RECONCILE_STATES]

    def link(self, alias: str, key: str) -> None:
        """SET the alias."""
        self._call(self.client.set, f"{self.prefix}:request-alias:{alias}", key)

    def resolve(self, alias: str) -> str | None:
        """GET the alias."""
        raw = self._call(self.client.get, f"{self.prefix}:request-alias:{alias}")
        return _text(raw) if raw else None

    def claim_delivery(self, delivery: str, ttl: int) -> bool:
        """SET NX with a TTL."""
        name = f"{self.prefix}:hook-delivery:{delivery}"
        return bool(self._call(self.client.set, name, "1", nx=True, ex=ttl))

    def release_delivery(self, delivery: str) -> None:
        """DEL the claim."""
        self._call(self.client.delete, f"{self.prefix}:hook-delivery:{delivery}")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class SqlRequestStore:
    """Records, aliases and delivery claims in SQL tables: the embedded default."""

    def __init__(self, url: str, *, table: str = "tfgen_request") -> None:
        self.engine = sql_engine(url)
        meta = sa.MetaData()
        self.table = sa.Table(
            table, meta,
            sa.Column("key", sa.String(128), primary_key=True),
            sa.Column("state", sa.String(16), nullable=False, index=True),
            sa.Column("cloud_id", sa.String(30), nullable=False),
            sa.Column("resource_type", sa.String(30), nullable=False),
            sa.Column("updated_at", sa.String(32), nullable=False, index=True),
            sa.Column("checked_at", sa.Float, nullable=False, default=0.0),
            sa.Column("document", sa.Text, nullable=False),
        )
        self.aliases = sa.Table(
            f"{table}_alias", meta,
            sa.Column("alias", sa.String(400), primary_key=True),
            sa.Column("key", sa.String(128), nullable=False),
        )
        self.deliveries = sa.Table(
            f"{table}_delivery", meta,
            sa.Column("delivery", sa.String(128), primary_key=True),
            sa.Column("at", sa.Float, nullable=False),
        )
        self._lock = threading.Lock()
        try:
            meta.create_all(self.engine)
        except sa_exc.OperationalError as e:
            raise DatabaseUnavailable(f"request store unavailable: {e}") from e

    def _do(self, fn: Callable[[sa.Connection], Any]) -> Any:
        try:
            with self.engine.begin() as conn:
                return fn(conn)
        except sa_exc.OperationalError as e:
            raise DatabaseUnavailable(f"request store unavailable: {e}") from e

    def get(self, key: str) -> RequestRecord | None:
        """SELECT the record."""
        t = self.table
        raw = self._do(lambda c: c.execute(sa.select(t.c.document).where(t.c.key == key))
                       .scalar_one_or_none())
        return RequestRecord.from_json(raw) if raw else None

    def update(self, key: str, step: Step) -> tuple[RequestRecord | None, bool]:
        """Run the step; write guarded on the document read (again on a race)."""
        t = self.table
        with self._lock:
            while True:
                current = self.get(key)
                outcome = step(RequestRecord.from_json(current.to_json()) if current else None)
                if outcome is None:
                    return current, False
                record, changed = outcome
                row = {"state": record.state, "cloud_id": record.cloud_id,
                       "resource_type": record.resource_type, "updated_at": record.updated_at,
                       "document": record.to_json()}
                statement: sa.Insert | sa.Update
                if current is None:
                    statement = t.insert().values(key=key, checked_at=0.0, **row)
                else:
                    statement = t.update().where(
                        t.c.key == key, t.c.document == current.to_json()).values(**row)
                try:
                    done = self._do(partial(_rowcount, statement))
                except sa_exc.IntegrityError:
                    continue  # inserted by someone else meanwhile: step on theirs
                if done:
                    return record, changed

    def list(self, *, state: str | None = None, cloud_id: str | None = None,
             resource_type: str | None = None, limit: int = 100) -> builtins.list[RequestRecord]:
        """SELECT, newest change first."""
        t = self.table
        query = sa.select(t.c.document).order_by(t.c.updated_at.desc()).limit(limit)
        for column, value in ((t.c.state, state), (t.c.cloud_id, cloud_id),
                              (t.c.resource_type, resource_type)):
            if value:
                query = query.where(column == value)
        docs = self._do(lambda c: c.execute(query).scalars().all())
        return [RequestRecord.from_json(d) for d in docs]

    def due(self, limit: int) -> builtins.list[RequestRecord]:
        """The least recently checked first; each gets checked-at now."""
        t = self.table
        query = (sa.select(t.c.key, t.c.document).where(t.c.state.in_(RECONCILE_STATES))
                 .order_by(t.c.checked_at).limit(limit))

        def pick(conn: sa.Connection) -> builtins.list[RequestRecord]:
            rows = conn.execute(query).all()
            now = dt.datetime.now(dt.UTC).timestamp()
            if rows:
                conn.execute(t.update().where(t.c.key.in_([r[0] for r in rows]))
                             .values(checked_at=now))
            return [RequestRecord.from_json(r[1]) for r in rows]

        records: builtins.list[RequestRecord] = self._do(pick)
        return records

    def link(self, alias: str, key: str) -> None:
        """Upsert the alias."""
        a = self.aliases

        def write(conn: sa.Connection) -> None:
            conn.execute(a.delete().where(a.c.alias == alias))
            conn.execute(a.insert().values(alias=alias, key=key))

        self._do(write)

    def resolve(self, alias: str) -> str | None:
        """SELECT the alias."""
        a = self.aliases
        key = self._do(lambda c: c.execute(sa.select(a.c.key).where(a.c.alias == alias))
                       .scalar_one_or_none())
        return str(key) if key else None

    def claim_delivery(self, delivery: str, ttl: int) -> bool:
        """INSERT unless present and younger than ``ttl``."""
        d = self.deliveries
        now = dt.datetime.now(dt.UTC).timestamp()
        try:
            self._do(lambda c: c.execute(d.delete().where(d.c.delivery == delivery,
                                                          d.c.at < now - ttl)))
            self._do(lambda c: c.execute(d.insert().values(delivery=delivery, at=now)))
        except sa_exc.IntegrityError:
            return False
        return True

    def release_delivery(self, delivery: str) -> None:
        """DELETE the claim."""
        d = self.deliveries
        self._do(lambda c: c.execute(d.delete().where(d.c.delivery == delivery)))


def _rowcount(statement: Any, conn: sa.Connection) -> int:
    return int(conn.execute(statement).rowcount)


def request_store_from_url(url: str, *, prefix: str = "tfgen") -> RequestStore:
    """Open the request store a URL names: ``redis://`` or any SQLAlchemy URL."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5,
                                      health_check_interval=30)
        return RedisRequestStore(client, prefix=prefix)
    return SqlRequestStore(url)
