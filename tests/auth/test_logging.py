"""Bearer tokens never reach the logs or the error answers, whatever goes wrong."""

from __future__ import annotations

import logging

import pytest
from flask.testing import FlaskClient

from tests.auth.conftest import PROTECTED, bearer
from tests.stubs.idp import IdentityProvider


def test_rejected_tokens_never_appear_in_logs_or_answers(
    client: FlaskClient, idp: IdentityProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [
        idp.mint(exp=1),
        idp.mint(aud="someone-else"),
        idp.mint(headers={"kid": "unknown"}),
        idp.mint(preferred_username=None),
        idp.mint()[:-10] + "AAAAAAAAAA",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.",
    ]
    answers = []
    for token in tokens:
        response = client.get(PROTECTED, headers=bearer(token))
        assert response.status_code == 401
        answers.append(response.get_data(as_text=True) + str(response.headers))
    idp.jwks_status = 503
    outage_token = idp.mint(headers={"kid": "after-outage"})
    assert client.get(PROTECTED, headers=bearer(outage_token)).status_code == 401
    tokens.append(outage_token)

    assert "bearer token rejected" in caplog.text  # failures are logged...
    for token in tokens:
        for secret in (token, token.split(".")[-1] or token):
            assert secret not in caplog.text  # ...without the token or its signature
            assert not any(secret in answer for answer in answers)
