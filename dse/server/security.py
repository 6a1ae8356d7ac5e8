"""API-key protection of the server and the bind-address rule.

* With an API key, every endpoint except ``GET /health``, the web page shell (``/``,
  ``/favicon.ico``, ``/static/*``) and the API description (``/docs``, ``/openapi.json``: no
  data) requires it, as ``X-API-Key: KEY``, ``Authorization: Bearer KEY`` or a ``?key=KEY``
  query parameter (for links; headers keep it out of logs). Keys are compared in constant time.
  The OpenAPI document declares these three schemes on the protected operations only, and only
  when the server has a key.
* Binding to an address other than loopback requires a key: :func:`check_bind` refuses.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket

from fastapi import Request
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from dse.server.limits import RequestError

#: OpenAPI-documented schemes (Swagger UI's "Authorize" button fills them in).
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")
bearer = HTTPBearer(auto_error=False, description="the server's API key as a bearer token")
api_key_query = APIKeyQuery(
    name="key", auto_error=False, description="the server's API key as ?key= (for links; headers stay out of logs)"
)

MIN_KEY_LENGTH = 8


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (names are resolved: every address must be loopback)."""
    name = host.strip("[]")
    if name in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses)


def check_bind(host: str, api_key: str | None) -> None:
    """Raise ``ValueError`` (one line) when ``host`` is not loopback and no API key is set, or the key is weak."""
    if api_key is not None and len(api_key) < MIN_KEY_LENGTH:
        raise ValueError(f"the API key is too short ({len(api_key)} characters; use at least {MIN_KEY_LENGTH})")
    if not api_key and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host} (not a loopback address) without an API key; pass "
            "--api-key KEY (or set DSE_API_KEY), or bind to 127.0.0.1"
        )


def request_key(
    request: Request, header_key: str | None, credentials: HTTPAuthorizationCredentials | None
) -> str | None:
    """The key a request presents: ``X-API-Key``, then a bearer token, then ``?key=``."""
    if header_key:
        return header_key
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    return request.query_params.get("key") or None


def verify_key(expected: str | None, presented: str | None) -> None:
    """No-op without an expected key; raise a 401 :class:`RequestError` when the key is missing or wrong."""
    if not expected:
        return
    if not presented:
        raise RequestError(401, "an API key is required: send the X-API-Key header (or Authorization: Bearer KEY)")
    if not hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8")):
        raise RequestError(401, "invalid API key")
