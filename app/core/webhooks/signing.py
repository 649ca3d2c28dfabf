"""Webhook secrets and signatures: Standard Webhooks secrets (``whsec_``), sealed at
rest with Fernet, and the signed headers of a delivery (``standardwebhooks``)."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken
from standardwebhooks.webhooks import Webhook

from app.errors import DatabaseUnavailable

__all__ = ["SecretBox", "new_secret", "sign_headers"]


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class SecretBox:
    """Seals secrets at rest with Fernet when a key is set; plain (marked) otherwise."""

    def __init__(self, key: str | None) -> None:
        self.fernet = Fernet(key.encode()) if key else None

    def seal(self, secret: str) -> str:
        """The stored form of ``secret``."""
        if self.fernet is None:
            return "plain:" + secret
        return "fernet:" + self.fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        """The secret back; a sealed value without the key fails loudly."""
        kind, _, body = sealed.partition(":")
        if kind == "plain":
            return body
        if self.fernet is None:
            raise DatabaseUnavailable("a webhook secret is encrypted: set WEBHOOK_SECRET_KEY")
        try:
            return self.fernet.decrypt(body.encode()).decode()
        except InvalidToken as e:
            raise DatabaseUnavailable("WEBHOOK_SECRET_KEY does not open a stored secret") from e


def sign_headers(msg_id: str, body: str, secrets_: Sequence[str],
                 now: dt.datetime | None = None) -> dict[str, str]:
    """Standard Webhooks headers, one ``v1,`` signature per secret (rotation)."""
    when = now or dt.datetime.now(dt.UTC)
    signatures = " ".join(Webhook(s).sign(msg_id, when, body) for s in secrets_)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signatures, "content-type": "application/json",
            "user-agent": "tfgen-webhooks"}
