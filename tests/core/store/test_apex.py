"""The APEX store on real SQLite and PostgreSQL: one suite, both databases.

Each database gets its own schema for this module (a SQLite file; a PostgreSQL schema
``tfgen_store_<random>``), created with the demo data plus a few rows made to probe
value conversion, ordering and broken catalog entries, and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pygohcl
import pytest
import sqlalchemy as sa

from app.core.model import JobRequest
from app.core.render import Renderer
from app.core.store import ApexStore, StoreSettings, plain_value
from app.core.store.schema import ResourceType, drop_schema, init_schema
from app.demo import RESOURCE_TYPES, load_demo
from app.errors import DatabaseUnavailable, NotFound, RequestNotFound, TemplateNotFound
from tests.conftest import PG_URL, free_port, require_postgresql

# A request type whose columns cover what templates receive: decimals, dates, long text,
# NULLs; and rules inserted out of order.
PROBE = ResourceType(
    "aws", "probe",
    columns=lambda: [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("module_version", sa.String(30), nullable=False),
        sa.Column("gitlab_project_id", sa.String(200)),
        sa.Column("disk_gb", sa.Numeric(10, 0)),
        sa.Column("hourly_cost", sa.Numeric(10, 4)),
        sa.Column("go_live", sa.Date),
        sa.Column("notes", sa.Text),
        sa.Column("owner_email", sa.String(100)),
    ],
    rule_columns=lambda: [
        sa.Column("request_id", sa.Integer, nullable=False),
        sa.Column("protocol", sa.String(10), nullable=False),
        sa.Column("from_port", sa.Integer, nullable=False),
        sa.Column("cidr", sa.String(40)),
    ],
    rows=[{"id": 5, "name": "probe", "module_version": "1.0.0",
           "gitlab_project_id": "platform/infra-live", "disk_gb": Decimal(250),
           "hourly_cost": Decimal("0.1250"), "go_live": dt.date(2027, 1, 4),
           "notes": "line one\n" + "x" * 5000, "owner_email": None}],
    rules=[{"request_id": 5, "protocol": "udp", "from_port": 53, "cidr": "10.0.0.0/8"},
           {"request_id": 5, "protocol": "tcp", "from_port": 443, "cidr": None},
           {"request_id": 5, "protocol": "tcp", "from_port": 22, "cidr": "10.1.0.0/16"},
           {"request_id": 6, "protocol": "tcp", "from_port": 80, "cidr": "0.0.0.0/0"}],
    templates={"1.0.0": "# {{ name }}\n"},
)
TYPES = (*RESOURCE_TYPES, PROBE)
# Catalog rows that name no request view, or could not safely name one.
ODD_TEMPLATES = [("aws", "ghost"), ("AWS", "rds"), ("aws", "rds; drop table users"),
                 ("aws\n", "rds"), ("\u0430ws", "rds"), ("aws", "rds-x")]

EC2 = JobRequest("aws", "ec2", 7)
RDS = JobRequest("aws", "rds", 42)


@dataclass
class Apex:
    """A database holding the APEX schema for this module."""

    name: str
    url: str
    schema: str | None = None

    def store(self, **settings: Any) -> ApexStore:
        return ApexStore(StoreSettings(url=self.url, schema=self.schema, **settings))


def _fill(engine: sa.Engine, schema: str | None = None) -> None:
    init_schema(engine, TYPES, schema=schema)
    load_demo(engine, TYPES, schema=schema)
    templates = sa.table("tf_template", sa.column("cloud_id"), sa.column("resource_type"),
                         sa.column("module_version"), sa.column("jinja_template"),
                         schema=schema)
    with engine.begin() as conn:
        conn.execute(templates.insert(), [
            {"cloud_id": c, "resource_type": r, "module_version": "1.0.0",
             "jinja_template": "# odd\n"} for c, r in ODD_TEMPLATES])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def apex(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Apex]:
    """The APEX schema on SQLite or in a private PostgreSQL schema; dropped after."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('apex') / 'apex.sqlite'}"
        engine = sa.create_engine(url)
        _fill(engine)
        yield Apex("sqlite", url)
        drop_schema(engine, TYPES)
        engine.dispose()
        return
    require_postgresql()
    schema = f"tfgen_store_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    engine = sa.create_engine(url)
    _fill(engine)
    engine.dispose()
    yield Apex("postgresql", url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def store(apex: Apex) -> Iterator[ApexStore]:
    """A fresh store (own engine and caches) on the module's database."""
    s = apex.store()
    yield s
    s.dispose()


class Statements:
    """Every statement SQLAlchemy sends on an engine, with its parameters."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.sent: list[tuple[str, Any]] = []
        sa.event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any,
                context: Any, executemany: bool) -> None:
        self.sent.append((statement, parameters))

    def take(self) -> list[tuple[str, Any]]:
        sent, self.sent = self.sent, []
        return sent

    def close(self) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._record)


# --- catalog ---------------------------------------------------------------------------


def test_catalog_holds_identifier_pairs_with_their_versions(store: ApexStore) -> None:
    catalog = store.catalog()
    assert catalog[("aws", "rds")] == ["1.1.0", "1.2.0"]
    assert catalog[("aws", "ec2")] == ["2.0.0"]
    assert ("aws", "ghost") in catalog  # an identifier pair, even without a view
    for cloud_id, resource_type in ODD_TEMPLATES[1:]:
        assert (cloud_id, resource_type) not in catalog


def test_catalog_is_cached_for_its_ttl_and_read_again_after(store: ApexStore) -> None:
    log = Statements(store.engine)
    try:
        store.catalog()
        assert len(log.take()) >= 1
        store.catalog()
        store.require_pair("aws", "rds")
        assert log.take() == []
        store.invalidate()
        store.catalog()
        assert len(log.take()) == 1
    finally:
        log.close()


@pytest.mark.parametrize(("cloud_id", "resource_type"), [
    ("gcp", "rds"), ("aws", "ghost2"), ("AWS", "rds"), ("aws\n", "rds"),
    ("aws", "rds; drop table users"), ("aws", "rds' --"), ("a" * 31, "rds"), ("", "rds"),
    ("\u0430ws", "rds"),  # Cyrillic a
])
def test_require_pair_refuses_unknown_and_unsafe_pairs(
    store: ApexStore, cloud_id: str, resource_type: str
) -> None:
    with pytest.raises(NotFound):
        store.require_pair(cloud_id, resource_type)
    with pytest.raises(TemplateNotFound):  # in a job: a documented job failure code
        store.load(JobRequest(cloud_id, resource_type, 1))


# --- loading a job ---------------------------------------------------------------------


def test_load_returns_row_rules_and_the_rows_template(store: ApexStore) -> None:
    resource, template = store.load(EC2)
    assert resource.row["name"] == "web-frontend-01"
    assert resource.row["id"] == 7
    assert resource.row["created_at"] == "2026-11-02T09:30:00"
    assert "tfgen__template" not in resource.row
    assert [r["description"] for r in resource.sg_rules] == ["HTTPS from anywhere",
                                                              "SSH from the office"]
    assert resource.sg_rules[1]["from_port"] == 22
    assert template.ref == "aws/ec2@2.0.0"
    assert "aws_security_group" in template.text
    rds, rds_template = store.load(RDS)
    assert rds.sg_rules == ()  # aws/rds has no rules view
    assert rds_template.module_version == "1.2.0"
    assert rds.row["allocated_storage"] == 100
    assert type(rds.row["allocated_storage"]) is int
    assert bool(rds.row["multi_az"]) is True


def test_values_reach_the_template_as_plain_python(store: ApexStore) -> None:
    resource, _ = store.load(JobRequest("aws", "probe", 5))
    row = resource.row
    assert set(row) >= {"id", "name", "disk_gb", "hourly_cost", "go_live", "notes"}
    assert all(key == key.lower() for key in row)
    assert row["disk_gb"] == 250
    assert type(row["disk_gb"]) is int
    assert Decimal(str(row["hourly_cost"])) == Decimal("0.125")
    assert row["go_live"] == "2027-01-04"
    assert row["notes"] == "line one\n" + "x" * 5000
    assert row["owner_email"] is None
    # Rules of this request only, in a stable order whatever order the view returns.
    assert [(r["protocol"], r["from_port"]) for r in resource.sg_rules] == [
        ("tcp", 22), ("tcp", 443), ("udp", 53)]
    assert resource.sg_rules[1]["cidr"] is None


def test_plain_value_converts_driver_types() -> None:
    class Lob:  # python-oracledb hands out LOB objects with read() when not prefetched
        def read(self) -> str:
            return "resource {}"

    assert plain_value(Decimal("42")) == 42
    assert type(plain_value(Decimal("4.2E+1"))) is int
    assert plain_value(Decimal("0.5")) == Decimal("0.5")
    assert plain_value(Decimal("Infinity")) == Decimal("Infinity")
    assert plain_value(dt.datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05"
    assert plain_value(dt.date(2026, 1, 2)) == "2026-01-02"
    assert plain_value(b"caf\xc3\xa9") == "café"
    assert plain_value(Lob()) == "resource {}"
    assert plain_value(None) is None
    assert plain_value(True) is True


def test_missing_row_template_and_view_map_to_their_codes(store: ApexStore) -> None:
    with pytest.raises(RequestNotFound, match="with id 4242"):
        store.load(JobRequest("aws", "rds", 4242))
    with pytest.raises(TemplateNotFound) as caught:
        store.load(JobRequest("aws", "rds", 44))
    assert caught.value.details == {"module_version": "0.9.0"}
    assert caught.value.code == "TEMPLATE_NOT_FOUND"
    with pytest.raises(RequestNotFound, match="v_aws_ghost_requests does not exist"):
        store.load(JobRequest("aws", "ghost", 1))
    assert store.load(RDS)[0].row["id"] == 42  # the store is still usable afterwards


def test_a_pair_that_left_the_catalog_fails_a_load_with_template_not_found(
        apex: Apex) -> None:
    store = apex.store(catalog_ttl=0)
    engine = sa.create_engine(apex.url)
    templates = sa.table("tf_template", sa.column("cloud_id"), sa.column("resource_type"),
                         sa.column("module_version"), sa.column("jinja_template"))
    try:
        with engine.begin() as conn:
            kept = conn.execute(sa.select(templates).where(
                templates.c.cloud_id == "azure", templates.c.resource_type == "vm")).all()
        assert store.load(JobRequest("azure", "vm", 101))[1].module_version == "3.1.0"
        with engine.begin() as conn:  # the admins remove the pair's templates
            conn.execute(templates.delete().where(
                templates.c.cloud_id == "azure", templates.c.resource_type == "vm"))
        with pytest.raises(TemplateNotFound) as caught:
            store.load(JobRequest("azure", "vm", 101))
        assert caught.value.code == "TEMPLATE_NOT_FOUND"
        assert caught.value.details == {"cloud_id": "azure", "resource_type": "vm"}
        assert "azure/vm" in caught.value.message
    finally:
        with engine.begin() as conn:
            conn.execute(templates.insert(), [dict(r._mapping) for r in kept])
        engine.dispose()
        store.dispose()


def test_demo_flags_and_lists_render_as_terraform_types(store: ApexStore) -> None:
    """The demo's multi_az (BOOLEAN: 1/0 on SQLite, a bool on PostgreSQL) is an HCL bool
    and its subnet_ids ("[subnet-0a1b, subnet-0c2d]" or a plain "subnet-0a1b") a list."""
    renderer = Renderer()
    modules = {}
    for request_id in (42, 43):
        resource, template = store.load(JobRequest("aws", "rds", request_id))
        text = renderer.render(template, resource)
        modules[request_id] = pygohcl.loads(text)["module"][f"rds_{request_id}"]
        assert "multi_az          = true" in text or "multi_az          = false" in text
    assert modules[42]["multi_az"] is True and modules[43]["multi_az"] is False
    assert modules[42]["subnet_ids"] == ["subnet-0a1b", "subnet-0c2d"]
    assert modules[43]["subnet_ids"] == ["subnet-0a1b"]


def test_user_token(store: ApexStore) -> None:
    token = store.user_token("alice")
    assert token is not None
    assert token.reveal() == "glpat-demo-alice-not-a-real-token"
    assert "glpat" not in repr(token)
    assert store.user_token("bob") is None  # NULL token
    assert store.user_token("nobody' OR '1'='1") is None


# --- round trips -----------------------------------------------------------------------


def test_a_job_load_takes_at_most_two_statements_and_a_token_one(store: ApexStore) -> None:
    store.load(EC2)  # the engine's first connect and the catalog
    store.load(RDS)  # finds out that aws/rds has no rules view (cached for the TTL)
    log = Statements(store.engine)
    try:
        store.load(EC2)
        assert len(log.take()) == 2
        store.load(RDS)
        assert len(log.take()) == 1
        with pytest.raises(RequestNotFound):
            store.load(JobRequest("aws", "ec2", 8))
        assert len(log.take()) == 1
        with pytest.raises(TemplateNotFound):
            store.load(JobRequest("aws", "rds", 44))
        assert len(log.take()) == 1
        store.user_token("alice")
        assert len(log.take()) == 1
    finally:
        log.close()


def test_values_are_bound_parameters(store: ApexStore) -> None:
    store.load(EC2)
    log = Statements(store.engine)
    try:
        store.load(EC2)
        store.user_token("alice")
        sent = log.take()
    finally:
        log.close()
    text = " ".join(statement for statement, _ in sent)
    assert "alice" not in text
    assert " 7" not in text and "=7" not in text
    assert "'" not in text  # no literal at all
    assert any("alice" in str(params) for _, params in sent)


# --- outages ---------------------------------------------------------------------------


def test_refused_connection_is_database_unavailable(apex: Apex, tmp_path: Path) -> None:
    if apex.name == "sqlite":
        url = f"sqlite:///{tmp_path / 'no-such-dir' / 'apex.sqlite'}"
    else:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    store = ApexStore(StoreSettings(url=url, connect_timeout=2))
    for call in (store.catalog, store.ping, lambda: store.user_token("alice")):
        with pytest.raises(DatabaseUnavailable) as caught:
            call()
        assert caught.value.code == "DATABASE_UNAVAILABLE"
        assert caught.value.retryable is True
        assert "postgres@" not in caught.value.message
    store.dispose()


def test_pool_size_and_timeout_come_from_settings(apex: Apex) -> None:
    store = apex.store(pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        pool = store.engine.pool
        assert isinstance(pool, sa.pool.QueuePool)
        assert pool.size() == 1
        assert pool.timeout() == 0.2
        # The first context holds the only connection.
        with store.connect(), pytest.raises(DatabaseUnavailable, match="TimeoutError"):
            store.ping()
        store.ping()
    finally:
        store.dispose()


def test_pool_size_zero_opens_a_connection_per_use(apex: Apex) -> None:
    store = apex.store(pool_size=0)
    try:
        assert isinstance(store.engine.pool, sa.pool.NullPool)
        assert store.load(EC2)[0].row["id"] == 7
        assert store.engine.pool.status() == "NullPool"
    finally:
        store.dispose()


# --- Oracle: compiled, not run ---------------------------------------------------------


def assert_compiles_for_oracle(store: ApexStore, prefix: str = "") -> None:
    """The load's statements in Oracle's SQL: unquoted names, values only as binds."""
    from sqlalchemy.dialects import oracle

    row_query, rules_query = store.statements(JobRequest("aws", "ec2", 7))
    for stmt, params in ((row_query, {"cloud_id": "aws", "resource_type": "ec2",
                                      "request_id": 7}),
                         (rules_query, {"rules_request_id": 7})):
        compiled = stmt.compile(dialect=oracle.dialect())
        sql = str(compiled)
        assert '"' not in sql, sql  # unquoted: Oracle folds to upper case, as APEX did
        assert "'" not in sql, sql  # no literals: values travel as binds
        assert compiled.params == params
        assert f"FROM {prefix}v_aws_ec2_requests" in sql
    assert f"{prefix}tf_template" in str(row_query.compile(dialect=oracle.dialect()))
    assert " AS r " not in str(row_query.compile(dialect=oracle.dialect()))


def test_statements_compile_for_oracle_unquoted_and_bound(store: ApexStore) -> None:
    from sqlalchemy.dialects import oracle

    assert_compiles_for_oracle(store)
    # has_table (the rules view check) asks the dictionary for the name Oracle stored.
    assert oracle.dialect().denormalize_name("v_aws_ec2_requests_sg_ingress") == \
        "V_AWS_EC2_REQUESTS_SG_INGRESS"


# --- init-db ---------------------------------------------------------------------------


def test_init_db_creates_the_schema_and_demo_data(tmp_path: Path) -> None:
    from app import create_app

    url = f"sqlite:///{tmp_path / 'apex.sqlite'}"
    app = create_app({"APP_ENV": "test", "DATABASE_URL": url,
                      "TFGEN_VAR_DIR": str(tmp_path / "var")})
    result = app.test_cli_runner().invoke(args=["init-db", "--demo"])
    assert result.exit_code == 0, result.output
    assert "with demo data" in result.output
    store = app.extensions["tfgen"].store
    assert store.load(EC2)[1].ref == "aws/ec2@2.0.0"
    again = app.test_cli_runner().invoke(args=["init-db", "--demo"])
    assert again.exit_code == 0, again.output
    store.dispose()


def test_init_db_refuses_oracle(tmp_path: Path) -> None:
    from app import create_app

    app = create_app({"APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path / "var"),
                      "DATABASE_URL": "oracle+oracledb://tfgen:pw@127.0.0.1:1/?service_name=x"})
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code != 0
    assert "APEX owns that schema" in result.output


# --- PostgreSQL only: what a server process shows --------------------------------------


@pytest.fixture
def pg(apex: Apex) -> Apex:
    """The PostgreSQL parameter only."""
    if apex.name != "postgresql":
        pytest.skip("needs a server process")
    return apex


def _backend_pid(store: ApexStore) -> int:
    with store.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def test_round_trips_on_the_wire(pg: Apex) -> None:
    """libpq's protocol trace: each round trip ends with the server's ReadyForQuery."""
    import tempfile

    import psycopg

    store = pg.store(pool_size=1, max_overflow=0)
    store.load(EC2)
    store.load(RDS)
    with store.engine.connect() as conn:
        pgconn = conn.connection.dbapi_connection.pgconn  # type: ignore[union-attr]
    counts = []
    for work in (lambda: store.load(EC2), lambda: store.load(RDS),
                 lambda: store.user_token("alice")):
        with tempfile.TemporaryFile() as trace:
            pgconn.trace(trace.fileno())
            pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                work()
            finally:
                pgconn.untrace()  # flushes libpq's buffer
            trace.seek(0)
            lines = trace.read().decode().splitlines()
        assert not any("BEGIN" in line or "ROLLBACK" in line for line in lines), lines
        counts.append(sum("ReadyForQuery" in line for line in lines))
    assert counts == [2, 1, 1]  # ec2 (row + rules), rds (row), token; no BEGIN/ROLLBACK
    store.dispose()


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_never_uses_the_parents_connections(pg: Apex) -> None:
    store = pg.store(pool_size=1, max_overflow=0)
    parent = _backend_pid(store)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            pid = _backend_pid(store)
            store.load(EC2)
            os.write(write_end, str(pid).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(child, 0)
    assert answer and int(answer) != parent
    # The child did not close the parent's connection either: it is still the same one.
    assert _backend_pid(store) == parent
    store.load(EC2)
    store.dispose()


def test_a_connection_the_server_dropped_is_replaced_without_failing(pg: Apex) -> None:
    store = pg.store(pool_size=1, max_overflow=0)
    first = _backend_pid(store)
    admin = sa.create_engine(PG_URL)
    with admin.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"),
                            {"pid": first}).scalar_one()
    admin.dispose()
    resource, _ = store.load(EC2)  # the dead pooled connection is noticed and replaced
    assert resource.row["id"] == 7
    assert _backend_pid(store) != first
    store.dispose()


class Proxy:
    """A loopback TCP relay to PostgreSQL that can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.sockets: list[socket.socket] = []
        self.server: socket.socket | None = None

    def start(self) -> Proxy:
        server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Stop listening and drop every relayed connection."""
        if self.server is not None:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self.server.close()
            self.server = None
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.sockets = []


def test_a_lost_database_is_unavailable_then_back(pg: Apex) -> None:
    url = sa.make_url(pg.url)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432)).start()
    store = ApexStore(StoreSettings(url=url.set(port=proxy.port).render_as_string(False),
                                    connect_timeout=2))
    try:
        assert store.load(EC2)[0].row["id"] == 7
        proxy.cut()
        with pytest.raises(DatabaseUnavailable) as caught:
            store.load(EC2)  # catalog still cached: the load itself meets the outage
        assert caught.value.retryable
        assert store.catalog()[("aws", "ec2")] == ["2.0.0"]
        store.invalidate()
        with pytest.raises(DatabaseUnavailable):
            store.catalog()  # nothing cached any more
        proxy.start()
        assert store.load(EC2)[0].row["id"] == 7
    finally:
        proxy.cut()
        store.dispose()


def test_catalog_served_from_cache_when_a_refresh_fails(pg: Apex) -> None:
    url = sa.make_url(pg.url)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432)).start()
    store = ApexStore(StoreSettings(url=url.set(port=proxy.port).render_as_string(False),
                                    connect_timeout=2, catalog_ttl=0))
    try:
        before = store.catalog()
        proxy.cut()
        assert store.catalog() == before
        assert store.require_pair("aws", "rds") == ("aws", "rds")
    finally:
        proxy.cut()
        store.dispose()


def test_objects_in_another_schema_via_database_schema(pg: Apex) -> None:
    suffix = uuid.uuid4().hex[:8]
    apex_owner, tfgen_user = f"tfgen_store_owner_{suffix}", f"tfgen_store_user_{suffix}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {apex_owner}"))
        conn.execute(sa.text(f"CREATE SCHEMA {tfgen_user}"))
    try:
        _fill(admin, schema=apex_owner)
        # tfgen connects with its own (empty) schema first on the search path.
        url = f"{PG_URL}?options=-csearch_path%3D{tfgen_user}"
        unqualified = ApexStore(StoreSettings(url=url))
        with pytest.raises(sa.exc.ProgrammingError):
            unqualified.catalog()
        unqualified.dispose()
        store = ApexStore(StoreSettings(url=url, schema=apex_owner))
        assert_compiles_for_oracle(store, prefix=f"{apex_owner}.")
        resource, template = store.load(EC2)
        assert len(resource.sg_rules) == 2
        assert template.ref == "aws/ec2@2.0.0"
        assert store.load(RDS)[0].sg_rules == ()  # its missing rules view is found missing
        with pytest.raises(RequestNotFound, match="does not exist"):
            store.load(JobRequest("aws", "ghost", 1))
        token = store.user_token("carol")
        assert token is not None
        store.dispose()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {apex_owner} CASCADE"))
            conn.execute(sa.text(f"DROP SCHEMA {tfgen_user} CASCADE"))
        admin.dispose()
