"""Cloud permissions, on_behalf_of and job visibility: through the real generate route
and as functions."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from app.auth import ON_BEHALF_OF_ROLE, Principal, can_see, require_cloud, resolve_owner
from app.errors import Forbidden
from tests.auth.conftest import submit
from tests.stubs.idp import IdentityProvider


def principal(
    username: str = "alice",
    *,
    roles: frozenset[str] = frozenset(),
    clouds: frozenset[str] = frozenset({"aws"}),
    is_admin: bool = False,
) -> Principal:
    return Principal(
        username=username,
        groups=frozenset({"aws-users"}),
        roles=roles,
        is_admin=is_admin,
        client_id=None,
        clouds=clouds,
    )


def test_cloud_in_the_callers_groups_is_accepted(
    client: FlaskClient, idp: IdentityProvider
) -> None:
    status, body = submit(client, idp.mint(), cloud_id="aws")
    assert (status, body) == (202, {"owner": "alice", "visible": True})


def test_cloud_outside_the_callers_groups_is_403(
    client: FlaskClient, idp: IdentityProvider
) -> None:
    status, body = submit(client, idp.mint(), cloud_id="azure")
    assert status == 403
    assert body["code"] == "FORBIDDEN"
    assert "cloud_id" in body["errors"]  # type: ignore[operator]


def test_wildcard_group_allows_every_cloud(client: FlaskClient, idp: IdentityProvider) -> None:
    token = idp.mint(groups=["platform"])
    assert submit(client, token, cloud_id="azure")[0] == 202


def test_no_groups_means_no_clouds(client: FlaskClient, idp: IdentityProvider) -> None:
    assert submit(client, idp.mint(groups=None), cloud_id="aws")[0] == 403


def test_on_behalf_of_without_the_role_is_403(client: FlaskClient, idp: IdentityProvider) -> None:
    status, body = submit(client, idp.mint(), cloud_id="aws", on_behalf_of="bob")
    assert status == 403
    assert ON_BEHALF_OF_ROLE in str(body["message"])


def test_on_behalf_of_oneself_needs_no_role(client: FlaskClient, idp: IdentityProvider) -> None:
    assert submit(client, idp.mint(), cloud_id="aws", on_behalf_of="alice") == (
        202,
        {"owner": "alice", "visible": True},
    )


@pytest.mark.parametrize(
    "claims",
    [
        {"resource_access": {"tfgen": {"roles": [ON_BEHALF_OF_ROLE]}}},
        {"realm_access": {"roles": [ON_BEHALF_OF_ROLE]}},
        {"roles": [ON_BEHALF_OF_ROLE]},
    ],
    ids=["keycloak client role", "keycloak realm role", "flat roles claim"],
)
def test_service_client_with_the_role_submits_for_the_named_user(
    client: FlaskClient, idp: IdentityProvider, claims: dict[str, Any]
) -> None:
    token = idp.mint(
        preferred_username="service-account-apex", azp="apex", groups=["platform"], **claims
    )
    status, body = submit(client, token, cloud_id="azure", on_behalf_of="bob")
    assert (status, body) == (202, {"owner": "bob", "visible": True})


def test_role_of_another_client_does_not_count(client: FlaskClient, idp: IdentityProvider) -> None:
    token = idp.mint(resource_access={"apex": {"roles": [ON_BEHALF_OF_ROLE]}})
    assert submit(client, token, cloud_id="aws", on_behalf_of="bob")[0] == 403


def test_cloud_check_uses_the_service_clients_own_groups(
    client: FlaskClient, idp: IdentityProvider
) -> None:
    token = idp.mint(
        preferred_username="service-account-apex", groups=["aws-users"], roles=[ON_BEHALF_OF_ROLE]
    )
    assert submit(client, token, cloud_id="azure", on_behalf_of="bob")[0] == 403


def test_resolve_owner_rejects_implausible_usernames() -> None:
    delegate = principal("apex", roles=frozenset({ON_BEHALF_OF_ROLE}))
    for name in ("", "bob smith", "bob\n", "x" * 256):
        with pytest.raises(Forbidden):
            resolve_owner(delegate, name)
    assert resolve_owner(delegate, "bob@example.com") == "bob@example.com"


def test_require_cloud_as_a_function() -> None:
    require_cloud(principal(), "aws")
    require_cloud(principal(clouds=frozenset({"*"})), "anything")
    with pytest.raises(Forbidden):
        require_cloud(principal(), "gcp")


def test_can_see_owner_admin_and_delegate_only() -> None:
    assert can_see(principal("alice"), "alice")
    assert not can_see(principal("alice"), "bob")
    assert can_see(principal("root", is_admin=True), "bob")
    assert can_see(principal("apex", roles=frozenset({ON_BEHALF_OF_ROLE})), "bob")
