"""One delivery attempt on the wire: a signed POST to the checked address, redirects not
followed, the answer read no further than 64 KiB."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3

from app.core.webhooks.targets import Target

__all__ = ["DELIVERY_TIMEOUT", "Attempt", "post_signed"]

#: Seconds a receiver has to answer, connection included.
DELIVERY_TIMEOUT = 10.0


@dataclass
class Attempt:
    """How one POST ended: an HTTP status, or an error without one."""

    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer delivers the event."""
        return self.status is not None and 200 <= self.status < 300


def post_signed(target: Target, body: str, headers: Mapping[str, str],
                timeout: float = DELIVERY_TIMEOUT) -> Attempt:
    """POST to the checked address (not a fresh lookup), redirects not followed."""
    kwargs: dict[str, Any] = {}
    pool_cls: type[urllib3.HTTPConnectionPool] = urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool_cls = urllib3.HTTPSConnectionPool
        kwargs = {"server_hostname": target.host, "assert_hostname": target.host,
                  "cert_reqs": "CERT_REQUIRED"}
    pool = pool_cls(target.address, target.port, timeout=urllib3.Timeout(total=timeout),
                    retries=False, maxsize=1, **kwargs)
    host = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    try:
        response = pool.urlopen("POST", target.path, body=body.encode(),
                                headers={**headers, "host": host}, redirect=False,
                                retries=False, preload_content=False)
        response.read(64 * 1024, decode_content=False)
        response.release_conn()
        return Attempt(status=response.status)
    except urllib3.exceptions.HTTPError as e:
        return Attempt(error=type(e).__name__)
    finally:
        pool.close()
