"""Confirmation tokens: a preview's signed, expiring, single-use permission to delete exactly what it showed.

A token binds the portal and credential, the type, the subject (an item id, or a set) and its version at preview;
the identity enters only the signature, so a token from another portal or person fails it. Spent tokens are
remembered by a `SpentTokens` store until both the wall clock and the monotonic clock say they have expired, so
a clock stepped forward and back cannot revive one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from b24_mcp.errors import Refusal

_PREFIX = "b24c1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Claim:
    """What a valid token permits: deleting `subject` (an item id, or a batch) as it was at `version`."""

    entity_type_id: int
    subject: str
    version: str  # an item's version (`items.version_of`), or the digest of a set's ids and versions
    expires_at: int
    nonce: str


def _name(subject: str) -> str:
    return f"id {subject}" if subject.isdigit() else subject


def invalid(reason: str) -> Refusal:
    return Refusal(
        "INVALID_CONFIRMATION_TOKEN",
        f"{reason} Preview again (dryRun: true) for a fresh token.",
    )


class SpentTokens(Protocol):
    """Where spent tokens are remembered: in this process, or shared by replicas."""

    async def spend(self, nonce: str, expires_at: int) -> bool:
        """Record `nonce` as spent; False when it already was."""
        ...


class SpentInMemory:
    """Spent tokens of this process, forgotten once both clocks agree they expired."""

    def __init__(
        self,
        ttl: int,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._clock = clock
        self._monotonic = monotonic
        self._spent: dict[str, tuple[int, float]] = {}  # nonce -> (expires_at, monotonic time of spending)

    async def spend(self, nonce: str, expires_at: int) -> bool:
        now, mono = self._clock(), self._monotonic()
        self._spent = {
            key: (expiry, at)
            for key, (expiry, at) in self._spent.items()
            if expiry > now or mono - at <= self._ttl  # a wall clock stepped forward does not forget it
        }
        if nonce in self._spent:
            return False
        self._spent[nonce] = (expires_at, mono)
        return True


class ConfirmationTokens:
    """Issues and redeems tokens for one portal and credential with one secret."""

    def __init__(
        self,
        secret: bytes,
        *,
        portal: str,
        ttl: int,
        clock: Callable[[], float] = time.time,
        spent: SpentTokens | None = None,
        lasting: bool = False,
    ) -> None:
        self._secret = secret
        self._lasting = lasting  # the secret is B24_CONFIRM_SECRET: tokens outlive a restart
        self._portal = portal
        self._ttl = ttl
        self._clock = clock
        self._spent = spent or SpentInMemory(ttl, clock=clock)

    def bound_to(self, identity: str) -> ConfirmationTokens:
        """Tokens for another caller of the portal (a signed-in person): same secret, lifetime and spent tokens,
        signatures bound to `identity`, so a token issued to one caller is refused for another."""
        return ConfirmationTokens(
            self._secret, portal=identity, ttl=self._ttl, clock=self._clock, spent=self._spent, lasting=self._lasting
        )

    def _sign(self, payload: str) -> str:
        message = f"{self._portal}\n{payload}".encode()
        return _b64(hmac.new(self._secret, message, hashlib.sha256).digest())

    def issue(self, entity_type_id: int, subject: int | str, version: str) -> tuple[str, datetime]:
        """A token for `subject` (an item id, or a batch's name) as of `version`, and when it expires."""
        expires = int(self._clock()) + self._ttl
        claims = {"t": entity_type_id, "i": str(subject), "u": version, "x": expires, "n": secrets.token_hex(8)}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{_PREFIX}.{payload}.{self._sign(payload)}", datetime.fromtimestamp(expires, UTC)

    def check(self, token: str, entity_type_id: int, subject: int | str) -> Claim:
        """The token's claim, when it is genuine, unexpired and for this subject; `Refusal` otherwise.

        Whether it was used is decided by `consume`, so that a repeated deletion can first learn from the portal
        that the item is already gone.
        """
        prefix, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        if prefix != _PREFIX or not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            restart = (
                ""
                if self._lasting
                else " Tokens do not survive a restart of the server unless B24_CONFIRM_SECRET is set."
            )
            raise invalid(f"The confirmation token is not one this server issued for this portal.{restart}")
        try:
            raw = json.loads(_unb64(payload))
            claim = Claim(int(raw["t"]), str(raw["i"]), str(raw["u"]), int(raw["x"]), str(raw["n"]))
        except (ValueError, KeyError, TypeError):
            raise invalid("The confirmation token is malformed.") from None
        if (claim.entity_type_id, claim.subject) != (entity_type_id, str(subject)):
            raise invalid(
                f"The confirmation token was issued for entityTypeId {claim.entity_type_id}, {_name(claim.subject)}."
            )
        if claim.expires_at <= self._clock():
            raise invalid("The confirmation token has expired.")
        return claim

    async def consume(self, claim: Claim) -> None:
        """Spend the token; a second `consume` of it fails. Call right before the deletion is sent."""
        if not await self._spent.spend(claim.nonce, claim.expires_at):
            raise invalid("The confirmation token was already used.")
