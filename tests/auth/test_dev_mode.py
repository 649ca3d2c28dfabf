"""Dev signing mode: local key, minted tokens, the CLI, and refusal outside dev/test."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from app.auth import DEV_ISSUER, AuthSettings, init_auth, mint_dev_token
from app.cli_token import token_command
from tests.auth.conftest import PROTECTED, bearer, embedded_config, make_app, submit, whoami


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "dev-signing-key.pem"


@pytest.fixture
def dev_config(key_path: Path, tmp_path: Path) -> dict[str, Any]:
    return {
        **embedded_config(tmp_path),
        "APP_ENV": "dev",
        "AUTH_MODE": "dev",
        "AUTH_DEV_KEY_PATH": str(key_path),
        "CLOUD_PERMISSIONS": '{"aws-admins": ["aws"]}',
        "ADMIN_GROUP": "tfgen-admins",
    }


@pytest.fixture
def dev_app(dev_config: dict[str, Any]) -> Flask:
    app = make_app(dev_config)
    app.cli.add_command(token_command)
    return app


def test_dev_mode_is_refused_unless_app_env_is_dev_or_test(
    dev_config: dict[str, Any], key_path: Path
) -> None:
    app = Flask(__name__)
    app.config.update({**dev_config, "APP_ENV": "prod"})
    with pytest.raises(ValueError, match=r"AUTH_MODE=dev is refused when APP_ENV=prod"):
        init_auth(app)
    assert not key_path.exists()


def test_unset_app_env_means_dev_for_auth_as_for_the_rest(dev_config: dict[str, Any]) -> None:
    # One APP_ENV default everywhere (auth used to default to prod, the rest to dev).
    app = Flask(__name__)
    app.config.update({k: v for k, v in dev_config.items() if k != "APP_ENV"})
    init_auth(app)
    assert app.extensions["tfgen_auth"].settings.app_env == "dev"


def test_key_is_created_on_first_use_with_0600(
    dev_app: Flask, dev_config: dict[str, Any], key_path: Path
) -> None:
    assert key_path.exists()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    before = key_path.read_bytes()
    make_app(dev_config)  # a second app (worker) reuses the key
    assert key_path.read_bytes() == before


def test_minted_token_passes_the_same_verification(dev_app: Flask) -> None:
    token = mint_dev_token(dev_app, "alice", ["aws-admins"], roles=["tfgen.on_behalf_of"])
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["iss"], claims["aud"]) == (DEV_ISSUER, "tfgen")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"

    client = dev_app.test_client()
    assert client.get(PROTECTED, headers=bearer(token)).status_code == 200
    caller = whoami(dev_app, token)
    assert caller["username"] == "alice"
    assert caller["clouds"] == ["aws"]
    assert caller["roles"] == ["tfgen.on_behalf_of"]
    submitted = submit(client, token, "aws", on_behalf_of="bob")
    assert submitted == (202, {"owner": "bob", "visible": True})


def test_dev_verifier_trusts_only_the_dev_key(dev_app: Flask) -> None:
    token = mint_dev_token(dev_app, "alice", [])
    claims = jwt.decode(token, options={"verify_signature": False})
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    header = jwt.get_unverified_header(token)
    forged = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": header["kid"]})
    client = dev_app.test_client()
    assert client.get(PROTECTED, headers=bearer(forged)).status_code == 401
    expired = mint_dev_token(dev_app, "alice", [], ttl=1)
    # Not expired yet (leeway 30 s); expiry itself is PyJWT's path, tested in test_tokens.
    assert client.get(PROTECTED, headers=bearer(expired)).status_code == 200


def test_cli_prints_a_working_token(dev_app: Flask) -> None:
    result = dev_app.test_cli_runner().invoke(
        args=["token", "--user", "alice", "--groups", "aws-admins,tfgen-admins", "--ttl", "600"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    caller = whoami(dev_app, token)
    assert caller["groups"] == ["aws-admins", "tfgen-admins"]
    assert caller["is_admin"] is True


def test_cli_and_minting_refuse_oidc_mode(app: Flask) -> None:
    app.cli.add_command(token_command)
    result = app.test_cli_runner().invoke(args=["token", "--user", "alice"])
    assert result.exit_code != 0
    assert "AUTH_MODE=dev" in result.output
    with pytest.raises(ValueError, match="AUTH_MODE=dev"):
        mint_dev_token(AuthSettings.from_config(app.config), "alice", [])
