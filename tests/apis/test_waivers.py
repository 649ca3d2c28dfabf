"""``/api/v1/waivers``: only admins grant, list and revoke; bad expiries answer 400."""

from __future__ import annotations

from tests.conftest import Stack

ADMIN = "tfgen-admins"
BODY = {"cloud_id": "aws", "resource_type": "ec2", "request_id": 7,
        "rule": "no-world-ingress-to-admin-or-database-ports", "reason": "bastion host",
        "expires_at": "2099-06-30T12:00:00+02:00"}


def test_a_non_admin_can_neither_grant_nor_list_nor_revoke(stack: Stack) -> None:
    headers = stack.auth("alice", "aws-admins")
    answer = stack.client.post("/api/v1/waivers", json=BODY, headers=headers)
    assert answer.status_code == 403 and answer.json["code"] == "FORBIDDEN"
    assert stack.client.get("/api/v1/waivers", headers=headers).status_code == 403
    assert stack.client.delete("/api/v1/waivers/x", headers=headers).status_code == 403
    admin = stack.auth("root", ADMIN)
    assert not [w for w in stack.client.get("/api/v1/waivers", headers=admin).json
                if w["granted_by"] == "alice"]


def test_an_admin_grants_lists_and_revokes(stack: Stack) -> None:
    admin = stack.auth("root", ADMIN)
    answer = stack.client.post("/api/v1/waivers", json=BODY, headers=admin)
    assert answer.status_code == 201, answer.json
    granted = answer.json
    assert granted["granted_by"] == "root" and granted["active"] is True
    assert granted["expires_at"] == "2099-06-30T10:00:00Z"
    listed = stack.client.get("/api/v1/waivers", headers=admin).json
    assert granted in listed
    assert stack.client.delete(f"/api/v1/waivers/{granted['id']}",
                               headers=admin).status_code == 204
    gone = stack.client.delete(f"/api/v1/waivers/{granted['id']}", headers=admin)
    assert gone.status_code == 404 and gone.json["code"] == "NOT_FOUND"


def test_bad_fields_and_past_expiries_answer_400(stack: Stack) -> None:
    admin = stack.auth("root", ADMIN)
    before = stack.client.get("/api/v1/waivers", headers=admin).json
    for body, field in (({**BODY, "expires_at": "2001-01-01"}, "expires_at"),
                        ({**BODY, "expires_at": "next tuesday"}, "expires_at"),
                        ({**BODY, "request_id": 0}, "request_id"),
                        ({**BODY, "request_id": 7.0}, "request_id"),
                        ({**BODY, "request_id": 2**63}, "request_id"),
                        ({**BODY, "request_id": 10**250}, "request_id"),
                        ({**BODY, "rule": "a\nTfgen-Job: x"}, "rule"),
                        ({k: v for k, v in BODY.items() if k != "rule"}, "rule"),
                        ({**BODY, "extra": 1}, "extra")):
        answer = stack.client.post("/api/v1/waivers", json=body, headers=admin)
        assert answer.status_code == 400, (body, answer.json)
        assert field in answer.json["errors"], answer.json
    assert stack.client.get("/api/v1/waivers", headers=admin).json == before
