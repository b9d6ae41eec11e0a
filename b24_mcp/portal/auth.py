"""How requests to the portal are authenticated: an incoming webhook, or an OAuth grant that refreshes itself.

An OAuth access token lasts an hour. On `expired_token` the portal client asks `OAuthSession.refresh`, which
refreshes once for all concurrent callers, and saves the rotated pair to the token file. Tokens travel in request
bodies, never in URLs.

Every credential knows its secrets (the webhook code and base URL; the access and refresh tokens, the ones before
the last refresh too, and the client secret) and offers `scrub(text)`: whatever text came from the other side
(an error code or description, an OAuth error, a redirect's address) passes through it before it goes into an
error, so a portal echoing a secret back cannot put it in front of the assistant, into the journal or into a log
line. A successful answer in which a secret occurs verbatim is masked as a whole by the portal client.

The token file (B24_TOKEN_FILE) is treated as hostile until checked:
- it is never opened through a symbolic link (`O_NOFOLLOW`), nor read when it is not a regular file owned by
  this user, nor when it is larger than any token file we write;
- writing creates a temporary file with a random name, exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600),
  and renames it over the file: a link planted at either name never receives the tokens;
- permission policy: a file that group or others may *read* is tightened to owner-only and used (its tokens are
  still ours; one warning line says they may have been read and advises re-authorising the application); a file
  that group or others may *write* is refused (its tokens may not be ours) and the configured tokens are used
  instead, also with one warning line. No line names a secret or the file's contents.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from b24_mcp.errors import PortalError, TransportError
from b24_mcp.settings import Webhook

logger = logging.getLogger(__name__)

MASK = "***"
# Real codes are short words and real descriptions a sentence or two: longer texts are clipped, not passed on.
MAX_CODE = 200
MAX_TEXT = 2000
# Far more than the file we write (four short fields): anything bigger is not ours.
_REAUTHORISE = (
    "The OAuth server refused to refresh the access token: the application must be re-authorised in the portal, "
    "and B24_ACCESS_TOKEN / B24_REFRESH_TOKEN set anew."
)

# Asks an OAuth token endpoint with these parameters (a GET with a query string, as documented) and returns
# (HTTP status, decoded body); raises `TransportError` when no answer came.
TokenRequest = Callable[[str, Mapping[str, str]], Awaitable[tuple[int, bytes]]]


@dataclass(frozen=True, repr=False)
class TokenPair:
    """An OAuth grant's tokens (secret: no repr), and how long the access token lasts when the OAuth server said."""

    access_token: str
    refresh_token: str | None
    user_id: int | None = None
    expires_in: int | None = None  # set by an exchange at the OAuth server; None for a pair read from a store


# Exchanges a pair's refresh token at the OAuth server for the next pair (`OAuthSession`'s own exchange).
Renew = Callable[[TokenPair], Awaitable[TokenPair]]


class GrantStore(Protocol):
    """Where a grant's rotated pair is kept for every process using it (`postgres.grants`: PostgreSQL)."""

    async def refresh(self, current: TokenPair, renew: Renew) -> TokenPair:
        """Under an exclusive lock on the stored grant: the stored pair when another process rotated it since
        `current` (and its access token is still fresh), else `renew(stored)`, stored. Only the lock holder asks
        the OAuth server, so a rotated refresh token is never used twice."""
        ...


class Secrets:
    """The texts that must never leave the process except towards the portal: finds and masks them."""

    __slots__ = ("_encoded", "_pattern")

    def __init__(self, *values: str | None) -> None:
        self._encoded: tuple[bytes, ...] = ()
        self._pattern: re.Pattern[str] | None = None
        self.set(*values)

    def set(self, *values: str | None) -> None:
        """Replace the known secrets; empty values are ignored."""
        known = sorted({value for value in values if value}, key=len, reverse=True)  # longest first: URL, then code
        self._encoded = tuple(value.encode() for value in known)
        self._pattern = re.compile("|".join(map(re.escape, known)), re.IGNORECASE) if known else None

    def scrub(self, text: str) -> str:
        """`text` with every occurrence of a secret (in any letter case) replaced by `***`."""
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def found_in(self, data: bytes) -> bool:
        """Whether a secret occurs verbatim in `data` (a fast check on a raw answer)."""
        return any(secret in data for secret in self._encoded)

    def outside_text(self, value: Any, limit: int = MAX_TEXT) -> str:
        """A value the other side sent, as text fit for an error: strings and numbers as sent, any other JSON
        named by its kind, every secret masked, and clipped to `limit` characters."""
        if value is None or isinstance(value, str | int | float | bool):
            text = self.scrub(str(value))
        else:
            text = "(a JSON object)" if isinstance(value, dict) else "(a JSON array)"
        return text if len(text) <= limit else text[:limit] + "… (cut)"


class Auth(Protocol):
    """What the portal client needs from a credential."""

    @property
    def host(self) -> str: ...

    @property
    def user_id(self) -> int | None: ...

    @property
    def identity(self) -> str:
        """Who calls: binds confirmation tokens to this portal and credential (not secret)."""
        ...

    @property
    def generation(self) -> int:
        """Changes whenever the credential is renewed."""
        ...

    @property
    def can_refresh(self) -> bool: ...

    @property
    def secrets(self) -> Secrets:
        """This credential's secrets, to find and mask them in what came from the other side."""
        ...

    def scrub(self, text: str) -> str:
        """`text` with every secret of this credential replaced by `***`."""
        return self.secrets.scrub(text)

    def prepare(self, method: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The URL and JSON body for a call of `method`."""
        ...

    async def refresh(self, request_token: TokenRequest, seen_generation: int) -> None:
        """Renew the credential, unless another caller already did since `seen_generation`."""
        ...


class WebhookAuth(Auth):
    """An incoming webhook: the secret is part of the URL's path, which is why URLs are never logged."""

    def __init__(self, webhook: Webhook) -> None:
        self._webhook = webhook
        code = webhook.base_url.rstrip("/").rsplit("/", 1)[-1]
        self._secrets = Secrets(webhook.base_url, code)

    def __repr__(self) -> str:
        return f"WebhookAuth(host={self.host!r}, user_id={self.user_id})"

    @property
    def host(self) -> str:
        return self._webhook.host

    @property
    def user_id(self) -> int | None:
        return self._webhook.user_id

    @property
    def identity(self) -> str:
        return f"{self._webhook.host}/webhook/{self._webhook.user_id}"

    @property
    def generation(self) -> int:
        return 0

    @property
    def can_refresh(self) -> bool:
        return False

    @property
    def secrets(self) -> Secrets:
        return self._secrets

    def prepare(self, method: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._webhook.base_url + method, dict(params)

    async def refresh(self, request_token: TokenRequest, seen_generation: int) -> None:
        raise RuntimeError("a webhook cannot be refreshed")


def is_token(value: object) -> bool:
    """Whether an OAuth server's value can be a token (a short printable string without spaces around it)."""
    return isinstance(value, str) and 0 < len(value) <= 4096 and value.isprintable() and value.strip() == value


def json_object(content: bytes) -> dict[str, Any] | None:
    """The JSON object in `content`, or None."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


async def exchange_refresh_token(
    request_token: TokenRequest,
    oauth_url: str,
    client_id: str,
    client_secret: str,
    refresh_token: str | None,
    secrets: Secrets,
    hint: Callable[[str], str | None],
) -> TokenPair:
    """One exchange of `refresh_token` at the OAuth server: the next pair (the same refresh token when it was not
    rotated; `user_id` None when the answer does not say, `expires_in` an hour).

    Raises `PortalError` with the OAuth server's code when it refused (its texts passed through `secrets`, the hint
    `hint(code)`), `TransportError` when its answer was lost or is not a token answer.
    """
    params = {
        "grant_type": "refresh_token",
        "client_id": client_id,
        "client_secret": client_secret,
        "refresh_token": refresh_token or "",
    }
    status, content = await request_token(oauth_url, params)
    body = json_object(content)
    if body is not None and "error" in body:
        code = secrets.outside_text(body["error"], MAX_CODE)
        description = body.get("error_description")
        raise PortalError(
            code,
            "" if description is None else secrets.outside_text(description),
            http_status=status,
            hint=hint(code),
        )
    access, rotated = refreshed_tokens(status, body)
    user_id = body.get("user_id") if body is not None else None
    expires_in = body.get("expires_in") if body is not None else None
    return TokenPair(
        access,
        rotated or refresh_token,
        user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None,
        expires_in if isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in > 0 else 3600,
    )


def refreshed_tokens(status: int, body: dict[str, Any] | None) -> tuple[str, str | None]:
    """The access token and the rotated refresh token (None when not rotated) of a refresh answer with no `error`;
    `TransportError` when the body is no token answer. The method call itself was not sent again, so nothing may
    have been done on the portal."""
    access = body.get("access_token") if body is not None else None
    rotated = body.get("refresh_token") if body is not None else None
    if not isinstance(access, str) or not is_token(access) or not (rotated is None or is_token(rotated)):
        raise TransportError(
            "BAD_PORTAL_RESPONSE",
            f"The OAuth server answered the token refresh with HTTP {status} and a body that is not a token answer.",
            http_status=status,
            retryable=status >= 500,
            maybe_sent=False,
        )
    return access, rotated if isinstance(rotated, str) else None
