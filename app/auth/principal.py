"""The caller (``Principal``) and the permission rules: pure functions, no Flask."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import Forbidden

__all__ = ["ON_BEHALF_OF_ROLE", "Principal", "can_see", "is_plausible_username",
           "require_cloud", "resolve_owner"]

ON_BEHALF_OF_ROLE = "tfgen.on_behalf_of"


@dataclass(frozen=True)
class Principal:
    """The caller, as a verified token describes it.

    Attributes:
        username: The token's username claim (``OIDC_USERNAME_CLAIM``).
        groups: Groups from ``OIDC_GROUPS_CLAIM``, without a leading '/'.
        roles: Realm roles, the audience's client roles and a flat ``roles`` claim.
        is_admin: Member of ``ADMIN_GROUP``: sees every job.
        client_id: The OAuth2 client the token was issued to (``azp``/``client_id``).
        clouds: Cloud ids the caller's groups allow (``CLOUD_PERMISSIONS``); '*' is all.
    """

    username: str
    groups: frozenset[str]
    roles: frozenset[str]
    is_admin: bool
    client_id: str | None
    clouds: frozenset[str] = frozenset()

    @property
    def may_act_for_others(self) -> bool:
        """Whether the caller holds the ``tfgen.on_behalf_of`` role (the APEX client)."""
        return ON_BEHALF_OF_ROLE in self.roles


def require_cloud(principal: Principal, cloud_id: str) -> None:
    """Allow the call only when the caller's groups grant ``cloud_id``.

    For a submission made ``on_behalf_of`` a user, this checks the *calling client's*
    permissions (see ``resolve_owner``).

    Raises:
        Forbidden: No group of the caller lists ``cloud_id`` or ``"*"``.
    """
    if "*" in principal.clouds or cloud_id in principal.clouds:
        return
    raise Forbidden(
        f"{principal.username} may not use cloud_id {cloud_id[:64]!r}",
        details={"cloud_id": "not allowed for the caller's groups"},
    )


def resolve_owner(principal: Principal, on_behalf_of: str | None) -> str:
    """Return the user a submitted job belongs to.

    Only a caller holding the ``tfgen.on_behalf_of`` role (the APEX service client) may
    name another user; the job then belongs to that user (their GitLab token is used and
    they see the job). The cloud check stays on the *client's own* permissions
    (``require_cloud(principal, ...)``): tfgen cannot verify any groups a client would
    claim for the user, APEX already decides which of its users may request what, and an
    operator bounds what APEX may do by the groups of its service account. Naming oneself
    is allowed without the role.

    Raises:
        Forbidden: ``on_behalf_of`` names someone else and the caller lacks the role, or
            it is not a plausible username.
    """
    if on_behalf_of is None or on_behalf_of == principal.username:
        return principal.username
    if not principal.may_act_for_others:
        raise Forbidden(
            f"only a client holding the {ON_BEHALF_OF_ROLE} role may set on_behalf_of",
            details={"on_behalf_of": f"requires the {ON_BEHALF_OF_ROLE} role"},
        )
    if not is_plausible_username(on_behalf_of):
        raise Forbidden(
            "on_behalf_of is not a valid username",
            details={"on_behalf_of": "not a valid username"},
        )
    return on_behalf_of


def can_see(principal: Principal, owner: str) -> bool:
    """Whether the caller may see a job owned by ``owner``.

    Owners see their jobs, admins see all, and so does a client holding the
    ``tfgen.on_behalf_of`` role: APEX polls the jobs it submits for its users, and a client
    that may act as any user gains nothing by reading their jobs.
    """
    return principal.username == owner or principal.is_admin or principal.may_act_for_others


def is_plausible_username(name: str) -> bool:
    return 0 < len(name) <= 255 and name.isprintable() and not any(c.isspace() for c in name)

