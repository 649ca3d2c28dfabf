"""Interim renderer (replaced by the full HCL-safe renderer of issue 4)."""

from __future__ import annotations

import json
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.core.model import ResourceRequest, Template
from app.errors import InvalidRequestData, RenderError


class HclLiteral(str):
    """Already a complete HCL literal: finalize leaves it alone."""


def _escape(value: str) -> str:
    body = json.dumps(value, ensure_ascii=False)[1:-1]
    return body.replace("${", "$${").replace("%{", "%%{")


def _finalize(value: Any) -> Any:
    if isinstance(value, HclLiteral) or not isinstance(value, str):
        return value
    return _escape(value)


def to_terraform_string(value: Any) -> HclLiteral:
    return HclLiteral(f'"{_escape(str(value))}"')


def to_terraform_list(values: Any) -> HclLiteral:
    return HclLiteral("[" + ", ".join(to_terraform_string(v) for v in values) + "]")


class Renderer:
    def __init__(self, cache_size: int = 256) -> None:
        self.env = ImmutableSandboxedEnvironment(
            undefined=jinja2.StrictUndefined, finalize=_finalize, autoescape=False)
        self.env.filters.update(to_terraform_string=to_terraform_string,
                                to_terraform_list=to_terraform_list)

    def compile(self, template: Template) -> jinja2.Template:
        return self.env.from_string(template.text)

    def render(self, template: Template, request: ResourceRequest) -> str:
        try:
            return self.compile(template).render(request.context())
        except jinja2.UndefinedError as e:
            raise InvalidRequestData(str(e)) from e
        except jinja2.TemplateError as e:
            raise RenderError(f"{template.ref}: {e}") from e
