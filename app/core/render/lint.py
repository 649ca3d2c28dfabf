"""``templates lint``: check every template in the APEX database before a job meets it.

For each template: it compiles; every expression printed in a bare position (outside
quotes, heredocs and comments) goes through an ``hcl``-family filter; it renders against
a sample request row of its (cloud, type), preferably one with the same module version;
and what it renders parses as HCL.

It also warns (without failing) where a bare expression prints a list-like or flag-like
column as it is, or through a filter that does not read it as one: ``[a, b]`` in a
VARCHAR2 printed with ``| hcl`` is one string, a NUMBER(1) flag is ``1`` where Terraform
wants ``true``. What makes a column list-like or flag-like is decided from the view's
column types and a sample of its values (``column_kinds``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from app.core.model import RenderedFile, ResourceRequest, Template
from app.core.render import Renderer
from app.core.store import ApexStore, plain_value
from app.core.validate import Validator
from app.errors import TfgenError

__all__ = ["Finding", "Sample", "column_kinds", "lint_template", "lint_templates"]

Kind = Literal["list", "flag"]
# Rows of a view read to judge its columns' values.
SAMPLE_ROWS = 100
_BRACKETED = re.compile(r"^\s*\[.*\]\s*$", re.DOTALL)
_FLAG_WORDS = frozenset({"y", "n", "yes", "no", "true", "false"})
# Names that say "list" when the values are strings (comma lists like "a,b" included).
_LIST_NAME = re.compile(r"(_ids|_list|_blocks|_cidrs|_zones|^zones)$")
_RIGHT_FILTER: dict[Kind, str] = {"list": "to_terraform_list", "flag": "to_terraform_bool"}


@dataclass(frozen=True)
class Finding:
    """One problem in one template; a ``warning`` does not fail ``templates lint``."""

    ref: str
    line: int | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.ref}:{self.line if self.line is not None else '-'}"
        return f"{where}: warning: {self.message}" if self.severity == "warning" \
            else f"{where}: {self.message}"


@dataclass(frozen=True)
class Sample:
    """A request to render a template against, and what its view's columns hold."""

    request: ResourceRequest
    kinds: Mapping[str, str]  # column -> "list" | "flag" (only those that are)
    rule_kinds: Mapping[str, str]  # the same for the rules view's columns


def _flag_type(column_type: Any) -> bool:
    if isinstance(column_type, sa.Boolean):
        return True
    if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float):
        return column_type.precision == 1 and not column_type.scale
    return False


def column_kinds(types: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Which columns hold lists or flags, from their SQL types and sampled values.

    - flag: a ``BOOLEAN`` or ``NUMBER(1)`` column whose values are not already Python
      bools, or a column whose every sampled value is ``Y``/``N``/``yes``/``no``/
      ``true``/``false`` (any case; ``CHAR(1)`` flags);
    - list: a text column with a sampled value written ``[...]``, or one whose name
      ends in ``_ids``, ``_list``, ``_blocks``, ``_cidrs`` or ``zones``.

    Args:
        types: Column name (lower case) -> SQLAlchemy type, as reflected (may be empty).
        rows: Sampled rows (lower-cased plain values).

    Returns:
        Column -> ``"list"`` or ``"flag"``, for the columns that are one.
    """
    values: dict[str, list[Any]] = {name: [] for name in types}
    for row in rows:
        for name, value in row.items():
            if value is not None:
                values.setdefault(name, []).append(value)
    kinds: dict[str, str] = {}
    for name, seen in values.items():
        texts = [v for v in seen if isinstance(v, str)]
        typed_flag = _flag_type(types.get(name)) and not all(
            isinstance(v, bool) for v in seen or [0])
        worded_flag = bool(texts) and len(texts) == len(seen) and all(
            v.strip().lower() in _FLAG_WORDS for v in texts)
        if typed_flag or worded_flag:
            kinds[name] = "flag"
        elif texts and (any(_BRACKETED.match(v) for v in texts) or _LIST_NAME.search(name)):
            kinds[name] = "list"
    return kinds


def _kind_warning(label: str, kinds: Mapping[str, str],
                  rule_kinds: Mapping[str, str]) -> str | None:
    """A warning when ``label`` (a placement's source) prints a list or flag column bare."""
    source, *filters = label.split(" | ")
    column, dot, attr = source.partition(".")
    kind = rule_kinds.get(attr) if dot and "." not in attr else kinds.get(column)
    if kind is None or not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?", source):
        return None
    right = _RIGHT_FILTER[kind]  # type: ignore[index]
    if filters and filters[-1] == right:
        return None
    how = f"with | {filters[-1]}" if filters else "without a filter"
    effect = ("one string (or a comma list as one item)" if kind == "list"
              else "1/0 or Y/N where Terraform expects true/false")
    return f"{source} holds a {kind} but is printed {how}, which writes {effect}; " \
           f"use | {right}"


def _read_view(conn: Connection, name: str, query: Any) -> tuple[dict[str, Any],
                                                                  list[dict[str, Any]]]:
    types = {str(c["name"]).lower(): c["type"] for c in sa.inspect(conn).get_columns(name)}
    rows = [{str(k).lower(): plain_value(v) for k, v in r.items()}
            for r in conn.execute(query).mappings()]
    return types, rows


def _sample(store: ApexStore, template: Template) -> Sample | None:
    cloud_id, resource_type = store.require_pair(template.cloud_id, template.resource_type)
    name = store.settings.request_view.format(cloud_id=cloud_id, resource_type=resource_type)
    view = sa.table(name, sa.column("id"), sa.column("module_version"))
    rules_view = sa.table(name + "_sg_ingress", sa.column("request_id"))
    same_version = sa.case((view.c.module_version == template.module_version, 0), else_=1)
    with store.connect() as conn:
        if not sa.inspect(conn).has_table(name):
            return None
        types, rows = _read_view(conn, name, sa.select(sa.literal_column("*"))
                                 .select_from(view).order_by(same_version, view.c.id)
                                 .limit(SAMPLE_ROWS))
        if not rows:
            return None
        plain = rows[0]
        rules: list[dict[str, Any]] = []
        rule_kinds: dict[str, str] = {}
        if sa.inspect(conn).has_table(rules_view.name):
            rule_types, some_rules = _read_view(
                conn, rules_view.name,
                sa.select(sa.literal_column("*")).select_from(rules_view).limit(SAMPLE_ROWS))
            rule_kinds = column_kinds(rule_types, some_rules)
            rules = [{str(k).lower(): plain_value(v) for k, v in r.items()} for r in conn.execute(
                sa.select(sa.literal_column("*")).select_from(rules_view)
                .where(rules_view.c.request_id == plain["id"])
            ).mappings()]
    request = ResourceRequest(cloud_id, resource_type, int(plain["id"]), plain, tuple(rules))
    return Sample(request, column_kinds(types, rows), rule_kinds)


def lint_template(renderer: Renderer, validator: Validator, template: Template,
                  sample: Sample | ResourceRequest | Mapping[str, Any] | None) -> list[Finding]:
    """Check one template.

    Args:
        renderer: Compiles and renders.
        validator: Parses what the sample renders to.
        template: The template to check.
        sample: A request (or a bare context) to render against, with what its columns
            hold when it is a ``Sample``; ``None`` skips rendering.

    Returns:
        The findings, in line order; empty when the template is fine.
    """
    ref = template.ref
    try:
        compiled = renderer.compile(template)
    except TfgenError as e:
        return [Finding(ref, e.details.get("line"), e.message)]
    findings = [
        Finding(ref, p.line, f"{p.label} is printed outside quotes without an hcl filter "
                              "(use | hcl, | hcl_identifier or | hcl_map)")
        for p in compiled.placements if p.kind == "bare" and not p.literal
    ]
    if isinstance(sample, Sample):
        for p in compiled.placements:
            warning = _kind_warning(p.label, sample.kinds, sample.rule_kinds) \
                if p.kind == "bare" else None
            if warning:
                findings.append(Finding(ref, p.line, warning, "warning"))
        sample = sample.request
    if sample is not None:
        context = sample.context() if isinstance(sample, ResourceRequest) else dict(sample)
        try:
            text = renderer.render_context(template, context)
            validator.parse([RenderedFile(f"{ref}.tf", text)])
        except TfgenError as e:
            first_line = e.message.splitlines()[0] if e.message else e.code
            findings.append(Finding(ref, e.details.get("line"),
                                    f"{e.code} with a sample row: {first_line}"))
    return sorted(findings, key=lambda f: f.line or 0)


def lint_templates(store: ApexStore, renderer: Renderer | None = None,
                   validator: Validator | None = None) -> Iterator[tuple[Template, list[Finding],
                                                                         bool]]:
    """Lint every template in the store's template table.

    Yields:
        ``(template, findings, rendered)`` per template; ``rendered`` is False when its
        (cloud, type) had no request row to render against.
    """
    renderer = renderer or Renderer(cache_size=0)
    validator = validator or Validator()
    t = store.templates
    with store.connect() as conn:
        rows = conn.execute(sa.select(t.c.cloud_id, t.c.resource_type, t.c.module_version,
                                      t.c.jinja_template)
                            .order_by(t.c.cloud_id, t.c.resource_type,
                                      t.c.module_version)).all()
    for cloud_id, resource_type, version, text in rows:
        template = Template(str(cloud_id), str(resource_type), str(version),
                            str(plain_value(text)))
        try:
            sample = _sample(store, template)
        except TfgenError as e:
            yield template, [Finding(template.ref, None, e.message)], False
            continue
        yield template, lint_template(renderer, validator, template, sample), sample is not None
