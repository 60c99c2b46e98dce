"""Bearer tokens for the collector's API, by role.

Tokens come from flowprobe.yaml (``alerting.tokens``), already resolved into
``Config.tokens`` = {value: (name, role)}. The name is who acted, for the
alert history; the value is never logged, returned or put in an error.

- viewer: reads alerts.
- operator: reads, acknowledges and resolves.
- webhook: posts Alertmanager's webhook and nothing else, so Alertmanager's
  credential cannot acknowledge anything.

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

__all__ = ["READ", "WEBHOOK", "WRITE", "Principal", "TokenAuth"]

Role = Literal["viewer", "operator", "webhook"]
READ: tuple[Role, ...] = ("viewer", "operator")
WRITE: tuple[Role, ...] = ("operator",)
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


class TokenAuth:
    """Looks a presented token up among the configured ones, in constant time.

    `tokens` is called on every request, so a config reload that adds or
    revokes a token applies at once.
    """

    def __init__(self, tokens: Callable[[], Mapping[str, tuple[str, str]]]) -> None:
        self.tokens = tokens

    def identify(self, presented: str) -> Principal | None:
        wanted = _digest(presented)
        found: Principal | None = None
        # Every token is compared, also after a match: how long this takes says nothing about which one matched.
        for value, (name, role) in self.tokens().items():
            if hmac.compare_digest(wanted, _digest(value)):
                found = Principal(name, role)
        return found

    def require(self, roles: tuple[Role, ...]) -> Callable[..., Principal]:
        """A FastAPI dependency: the caller, if its token has one of `roles`; else 401 or 403."""
        needed = " or ".join(roles)

        def dependency(credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> Principal:
            if not self.tokens():
                raise HTTPException(401, "no API tokens are configured (alerting.tokens in flowprobe.yaml)", headers=_CHALLENGE)
            if credentials is None:
                raise HTTPException(401, "missing bearer token (Authorization: Bearer <token>)", headers=_CHALLENGE)
            principal = self.identify(credentials.credentials)
            if principal is None:
                raise HTTPException(401, "invalid bearer token", headers=_CHALLENGE)
            if principal.role not in roles:
                raise HTTPException(403, f"the token {principal.name!r} has the role {principal.role}; this needs {needed}")
            return principal

        return dependency
