"""``templates lint``: check every template in the APEX database before a job meets it.

For each template: it compiles; every expression printed in a bare position (outside
quotes, heredocs and comments) goes through an ``hcl``-family filter; it renders against
a sample request row of its (cloud, type), preferably one with the same module version;
and what it renders parses as HCL.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app.core.model import RenderedFile, ResourceRequest, Template
from app.core.render import Renderer
from app.core.store import ApexStore, plain_value
from app.core.validate import Validator
from app.errors import TfgenError

__all__ = ["Finding", "lint_template", "lint_templates"]


@dataclass(frozen=True)
class Finding:
    """One problem in one template."""

    ref: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.ref}:{self.line if self.line is not None else '-'}: {self.message}"


def _sample(store: ApexStore, template: Template) -> ResourceRequest | None:
    cloud_id, resource_type = store.require_pair(template.cloud_id, template.resource_type)
    name = store.settings.request_view.format(cloud_id=cloud_id, resource_type=resource_type)
    view = sa.table(name, sa.column("id"), sa.column("module_version"))
    rules_view = sa.table(name + "_sg_ingress", sa.column("request_id"))
    same_version = sa.case((view.c.module_version == template.module_version, 0), else_=1)
    with store.connect() as conn:
        if not sa.inspect(conn).has_table(name):
            return None
        row = conn.execute(
            sa.select(sa.literal_column("*")).select_from(view)
            .order_by(same_version, view.c.id).limit(1)
        ).mappings().first()
        if row is None:
            return None
        plain = {str(k).lower(): plain_value(v) for k, v in row.items()}
        rules: list[dict[str, Any]] = []
        if sa.inspect(conn).has_table(rules_view.name):
            rules = [{str(k).lower(): plain_value(v) for k, v in r.items()} for r in conn.execute(
                sa.select(sa.literal_column("*")).select_from(rules_view)
                .where(rules_view.c.request_id == plain["id"])
            ).mappings()]
    return ResourceRequest(cloud_id, resource_type, int(plain["id"]), plain, tuple(rules))


def lint_template(renderer: Renderer, validator: Validator, template: Template,
                  sample: ResourceRequest | Mapping[str, Any] | None) -> list[Finding]:
    """Check one template.

    Args:
        renderer: Compiles and renders.
        validator: Parses what the sample renders to.
        template: The template to check.
        sample: A request (or a bare context) to render against; ``None`` skips rendering.

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
