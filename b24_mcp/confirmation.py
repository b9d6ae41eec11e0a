"""Confirmation tokens: a preview's signed, expiring, single-use permission to delete exactly what it showed.

A token binds the portal, the type, the id and the item's `updatedTime` at preview; the portal enters only the
signature, so a token from another portal fails it. Used tokens are remembered until they expire.
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
    version: str  # an item's updatedTime, or the digest of a batch's ids and updatedTimes
    expires_at: int
    nonce: str


def _name(subject: str) -> str:
    return f"id {subject}" if subject.isdigit() else subject


def invalid(reason: str) -> Refusal:
    return Refusal(
        "INVALID_CONFIRMATION_TOKEN",
        f"{reason} Call crm_item_delete with dryRun: true for a fresh preview and token.",
    )


class ConfirmationTokens:
    """Issues and redeems tokens for one portal with one secret."""

    def __init__(self, secret: bytes, *, portal: str, ttl: int, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._portal = portal
        self._ttl = ttl
        self._clock = clock
        self._used: dict[str, int] = {}

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
            raise invalid("The confirmation token is not one this server issued for this portal.")
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

    def consume(self, claim: Claim) -> None:
        """Spend the token; a second `check` of it fails. Call right before the deletion is sent."""
        now = self._clock()
        self._used = {nonce: expiry for nonce, expiry in self._used.items() if expiry > now}
        if claim.nonce in self._used:
            raise invalid("The confirmation token was already used.")
        self._used[claim.nonce] = claim.expires_at
