"""The input document policies see: the request row, its rendered HCL as JSON, the
template and the owner.

``pygohcl`` gives a block that occurs once as an object and a repeated one as a list;
``hcl_document`` makes every block a list so one rule works for one ``ingress`` or five.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from app.core.model import RenderedFile, ResourceRequest, Template

__all__ = ["hcl_document", "policy_input"]


def _plain(value: Any) -> Any:
    """A JSON value for a database value (Decimal, dates, nested rows)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    iso = getattr(value, "isoformat", None)
    return iso() if callable(iso) else str(value)


_HEADER = re.compile(
    r'^([A-Za-z_][\w-]*)((?:\s+(?:"(?:[^"\\]|\\.)*"|[A-Za-z_][\w-]*))*)\s*\{(.*?)(\}?)\s*$')
_LABEL = re.compile(r'"((?:[^"\\]|\\.)*)"|([A-Za-z_][\w-]*)')
_HEREDOC = re.compile(r"<<-?([A-Za-z_]\w*)\s*$")


def _label(match: re.Match[str]) -> str:
    if match.group(2) is not None:
        return match.group(2)
    try:
        return str(json.loads(f'"{match.group(1)}"'))
    except ValueError:
        return match.group(1)


def _block_keys(content: str) -> dict[tuple[str, ...], int]:
    """Where blocks are in a (``terraform fmt``-ed) file: key path -> number of labels.

    A key path is how pygohcl's JSON reaches the block's name, e.g. ``("resource",
    "aws_security_group", "db", "ingress")``. Attributes (``tags = {``) are not blocks.
    """
    keys: dict[tuple[str, ...], int] = {}
    stack: list[tuple[str, ...] | None] = []  # a block's body path, or None in an expression
    heredoc: str | None = None
    for raw in content.splitlines():
        line = raw.strip()
        if heredoc is not None:
            heredoc = None if line == heredoc else heredoc
            continue
        if not line or line.startswith(("#", "//")):
            continue
        parent = stack[-1] if stack else ()
        header = _HEADER.match(line) if parent is not None else None
        if header and parent is not None and (not header.group(3).strip() or header.group(4)):
            name = header.group(1)
            labels = tuple(_label(m) for m in _LABEL.finditer(header.group(2)))
            keys[(*parent, name)] = len(labels)
            if not header.group(4):  # a one-line block ``lifecycle { x = 1 }`` closes itself
                stack.append((*parent, name, *labels))
            continue
        while line[:1] in ("}", "]", ")") and line:
            if stack:
                stack.pop()
            line = line[1:].lstrip(",").strip()
        doc = _HEREDOC.search(line)
        if doc:
            heredoc = doc.group(1)
        elif line.endswith(("{", "[", "(")):
            stack.append(None)
    return keys


def _normalise(node: Any, path: tuple[str, ...], keys: Mapping[tuple[str, ...], int]) -> Any:
    if not isinstance(node, dict):
        return node
    return {k: _blocks(v, (*path, k), keys[(*path, k)], keys) if (*path, k) in keys else v
            for k, v in node.items()}


def _blocks(value: Any, path: tuple[str, ...], labels: int,
            keys: Mapping[tuple[str, ...], int]) -> Any:
    if labels and isinstance(value, dict):
        return {label: _blocks(sub, (*path, label), labels - 1, keys)
                for label, sub in value.items()}
    bodies = value if isinstance(value, list) else [value]
    if labels:
        return [_blocks(b, path, labels, keys) for b in bodies]
    return [_normalise(body, path, keys) for body in bodies]


def hcl_document(content: str) -> dict[str, Any]:
    """Parse HCL into JSON where every block, at any depth, is a list of bodies.

    Strings keep their value as stored: ``$${`` written for a literal ``${`` reads back
    as ``${``; a real interpolation (``${var.x}``) is kept as written.

    Args:
        content: One file of rendered, formatted Terraform.

    Returns:
        ``{"resource": {"aws_s3_bucket": {"logs": [{...}]}}, "locals": [{...}], ...}``.
    """
    import pygohcl  # lazily: a Go runtime (see app.core.validate)

    parsed = pygohcl.loads(content, keep_interpolations=True)
    return dict(_normalise(parsed, (), _block_keys(content)))


def policy_input(resource: ResourceRequest, files: Sequence[RenderedFile], template: Template,
                 owner: str) -> dict[str, Any]:
    """Build the document policies see as ``input`` (see the module docstring)."""
    request = {str(k): _plain(v) for k, v in resource.row.items()}
    request.update(cloud_id=resource.cloud_id, resource_type=resource.resource_type,
                   request_id=resource.request_id,
                   sg_rules=[_plain(dict(rule)) for rule in resource.sg_rules])
    return {
        "request": request,
        "files": {f.path: hcl_document(f.content) for f in files},
        "template": {"ref": template.ref, "sha256": template.sha256},
        "owner": owner,
    }
