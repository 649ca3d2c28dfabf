"""Interim caller identity (replaced by OIDC bearer tokens in issue 6).

Until then the caller names themselves in ``X-Tfgen-User`` (groups in
``X-Tfgen-Groups``): exactly the gap issue 6 closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, g, request

from app.errors import Forbidden

__all__ = ["Principal", "can_see", "current_principal", "init_auth", "require_cloud",
           "resolve_owner"]


@dataclass(frozen=True)
class Principal:
    username: str
    groups: frozenset[str]
    roles: frozenset[str]
    is_admin: bool
    client_id: str | None = None


def init_auth(app: Flask) -> None:
    app.extensions["tfgen_auth"] = {"admin_group": app.config["ADMIN_GROUP"]}


def current_principal() -> Principal:
    if "principal" not in g:
        groups = frozenset(x for x in request.headers.get("X-Tfgen-Groups", "").split(",") if x)
        g.principal = Principal(request.headers.get("X-Tfgen-User", "anonymous"), groups,
                                frozenset(), "tfgen-admins" in groups)
    principal: Principal = g.principal
    return principal


def require_cloud(principal: Principal, cloud_id: str) -> None:
    return None


def resolve_owner(principal: Principal, on_behalf_of: str | None) -> str:
    if on_behalf_of and on_behalf_of != principal.username:
        raise Forbidden("on_behalf_of needs the tfgen.on_behalf_of role")
    return principal.username


def can_see(principal: Principal, owner: str) -> bool:
    return principal.is_admin or principal.username == owner


AUTHORIZATIONS: dict[str, Any] = {}
