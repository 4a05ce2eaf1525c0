"""Bearer tokens and the brake on password guessing.

Tokens are HS256 JWTs that carry only the user name, issue/expiry times, issuer,
a random id and a credential version: nothing secret (the service we replace put
the password hash in a token that never expired). The version is a keyed digest
of the user's bcrypt hash at sign-in; every hash has a fresh salt, so changing the
password or removing and re-adding the user refuses the tokens issued before.
Failed sign-ins are limited per client so a password cannot be guessed at bcrypt
speed from one address.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt

ALGORITHM = "HS256"
#: Clock difference tolerated between the server that issued a token and the one checking it.
LEEWAY_SECONDS = 5


class TokenError(Exception):
    """A bearer token that must be refused; ``detail`` says why, for the 401 body."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Tokens:
    """Issues and checks the API's signed tokens."""

    def __init__(self, key: str, ttl_seconds: int, issuer: str) -> None:
        self._key = key
        self.ttl_seconds = ttl_seconds
        self.issuer = issuer

    def issue(self, username: str, credential: bytes, now: float | None = None) -> str:
        """A token for ``username``, bound to their current password hash ``credential``."""
        issued = int(now if now is not None else time.time())
        claims = {
            "sub": username,
            "iss": self.issuer,
            "iat": issued,
            "nbf": issued,
            "exp": issued + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
            "ver": self._version(credential),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def _version(self, credential: bytes) -> str:
        return hmac.new(self._key.encode(), credential, hashlib.sha256).hexdigest()[:24]

    def redact(self, name: str) -> str:
        """A stand-in for a user name that may be a mistyped password: a short keyed digest."""
        digest = hmac.new(self._key.encode(), b"name:" + name.encode(), hashlib.sha256)
        return f"unknown:{digest.hexdigest()[:12]}"

    def verify(self, token: str, credential_of: Callable[[str], bytes | None]) -> str:
        """The user name in a valid token whose user still has the password it was issued for.

        ``credential_of`` gives a user's current password hash (None: no such user);
        raises :class:`TokenError` saying what is wrong.
        """
        claims = self._claims(token)
        subject = claims["sub"]
        credential = credential_of(subject)
        if credential is None:
            raise TokenError(f"user {subject!r} no longer exists")
        version = claims.get("ver")
        if not isinstance(version, str):
            raise TokenError("token has no 'ver' claim; get a new one from POST /token")
        if not hmac.compare_digest(version, self._version(credential)):
            raise TokenError(
                f"token was issued before the password of {subject!r} changed (or the user "
                "was removed and added again); get a new one from POST /token"
            )
        return subject

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.InvalidTokenError as exc:
            raise TokenError(self._reason(exc, token)) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenError("token has an empty subject")
        return claims

    def _reason(self, exc: jwt.InvalidTokenError, token: str) -> str:
        if isinstance(exc, jwt.ExpiredSignatureError):
            return f"token expired at {_expiry(token)}; get a new one from POST /token"
        if isinstance(exc, jwt.InvalidSignatureError):
            return "token signature is invalid (not issued by this server)"
        if isinstance(exc, jwt.MissingRequiredClaimError):
            return f"token has no {exc.claim!r} claim"
        if isinstance(exc, jwt.InvalidIssuerError):
            return f"token was not issued by {self.issuer!r}"
        if isinstance(exc, jwt.ImmatureSignatureError):
            return "token is not valid yet (check the clocks)"
        if isinstance(exc, jwt.InvalidAlgorithmError):
            return f"token is not signed with {ALGORITHM}"
        if isinstance(exc, jwt.DecodeError):
            return "token is malformed (not a JWT)"
        return f"token is invalid: {exc}"


def _expiry(token: str) -> str:
    try:
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        return datetime.fromtimestamp(int(exp), UTC).isoformat().replace("+00:00", "Z")
    except Exception:
        return "an unknown time"


class FailedLoginLimiter:
    """At most ``limit`` failed sign-ins per client in any ``window`` seconds.

    An attempt counts as failed from the moment it starts and is forgiven only
    when it succeeds, so a burst of concurrent guesses cannot all slip in while
    bcrypt is still checking the first. A success does not clear older failures:
    otherwise one valid account would let a client reset its own counter.
    Memory is bounded by forgetting the least recently seen clients.
    """

    def __init__(self, limit: int, window: float, max_clients: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            times = self._failures[client] = deque()
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(client)
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def begin(self, client: str, now: float | None = None) -> float | None:
        """Count an attempt as failed; return seconds to wait instead if over the limit."""
        now = time.monotonic() if now is None else now
        times = self._recent(client, now)
        if len(times) >= self.limit:
            return max(0.0, times[0] + self.window - now)
        times.append(now)
        return None

    def succeeded(self, client: str) -> None:
        """Forgive the attempt begun for ``client`` (the newest one)."""
        times = self._failures.get(client)
        if times:
            times.pop()
