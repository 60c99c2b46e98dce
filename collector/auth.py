"""Bearer tokens for the collector's API, by role, and the read policy.

Tokens come from flowprobe.yaml (``alerting.tokens``), already resolved into
``Config.tokens`` = {value: (name, role)}. The name is who acted, for the
alert history; the value is never logged, returned or put in an error.

Roles (SECURITY.md has the route-by-route matrix):

- viewer: reads everything, alerts and reports included.
- operator: what viewer does, and acknowledges and resolves alerts.
- admin: what operator does, and administers the collector (reload the
  config, run a scheduled report now).
- webhook: posts Alertmanager's webhook and nothing else, so Alertmanager's
  credential can neither read nor acknowledge anything.

Status reads (workflow states, runs, the dashboard, the live stream) are open
while ``api.public_reads`` is true (the default, for the status page) and
need a viewer token when it is false. Alerts and reports always need one:
they name people and carry their comments.

With no token configured every protected call is refused: secure by default.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["ADMIN", "READ", "WEBHOOK", "WRITE", "Principal", "Role", "TokenAuth", "bearer_token"]

Role = Literal["viewer", "operator", "admin", "webhook"]
READ: tuple[Role, ...] = ("viewer", "operator", "admin")
WRITE: tuple[Role, ...] = ("operator", "admin")
ADMIN: tuple[Role, ...] = ("admin",)
WEBHOOK: tuple[Role, ...] = ("webhook",)

_bearer = HTTPBearer(auto_error=False, description="A token from alerting.tokens in flowprobe.yaml.")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


def _digest(value: str) -> bytes:
    # Equal-length inputs for compare_digest: its time then says nothing about the token's length.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class TokenAuth:
    """Looks a presented token up among the configured ones, in constant time.

    `tokens` is called on every request, so a config reload that adds or
    revokes a token applies at once; so is `public_reads`.
    """

    def __init__(self, tokens: Callable[[], Mapping[str, tuple[str, str]]], public_reads: Callable[[], bool] = lambda: False) -> None:
        self.tokens = tokens
        self.public_reads = public_reads

    def identify(self, presented: str) -> Principal | None:
        wanted = _digest(presented)
        found: Principal | None = None
        # Every token is compared, also after a match: how long this takes says nothing about which one matched.
        for value, (name, role) in self.tokens().items():
            if hmac.compare_digest(wanted, _digest(value)):
                found = Principal(name, role)
        return found

    def authorize(self, token: str | None, roles: tuple[Role, ...]) -> Principal:
        """The caller, if `token` has one of `roles`; else HTTPException 401 or 403. Never echoes the token."""
        if not self.tokens():
            raise HTTPException(401, "no API tokens are configured (alerting.tokens in flowprobe.yaml)", headers=_CHALLENGE)
        if token is None:
            raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)", headers=_CHALLENGE)
        principal = self.identify(token)
        if principal is None:
            raise HTTPException(401, "invalid bearer token", headers=_CHALLENGE)
        if principal.role not in roles:
            raise HTTPException(403, f"the token {principal.name!r} has the role {principal.role}; this needs {' or '.join(roles)}")
        return principal

    def status_reader(self, token: str | None) -> Principal | None:
        """For a status read: None (anonymous) while reads are public, else the viewer (or 401/403).

        While reads are public a token is still looked at, so a caller with one
        may get more (the live stream's alerts); an unknown one counts as none.
        """
        if self.public_reads():
            return self.identify(token) if token is not None else None
        return self.authorize(token, READ)

    @staticmethod
    def may_read_alerts(principal: Principal | None) -> bool:
        return principal is not None and principal.role in READ

    def require(self, roles: tuple[Role, ...]) -> Callable[..., Principal]:
        """A FastAPI dependency: the caller, if its token has one of `roles`; else 401 or 403."""

        def dependency(credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> Principal:
            return self.authorize(credentials.credentials if credentials is not None else None, roles)

        return dependency

    def reader(self) -> Callable[..., Principal | None]:
        """A FastAPI dependency for status reads (see `status_reader`)."""

        def dependency(credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> Principal | None:
            return self.status_reader(credentials.credentials if credentials is not None else None)

        return dependency
