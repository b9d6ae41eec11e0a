"""Signing a person in at the portal: the authorization-code exchange and who the portal says signed in.

Everything that comes back is hostile until checked: the code exchange's answer must be a token answer for this
portal (its `client_endpoint` names the configured portal; `member_id` has its shape), and the person is who the
portal's `profile` says, with the new token, not what the browser's redirect claimed. The documented answer of the
code exchange has no `user_id` (settings/oauth/index.md); when one comes, it must be the profile's user.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

from b24_mcp.errors import B24Error
from b24_mcp.portal.auth import Secrets, is_token, json_object
from b24_mcp.portal.client import PortalClient
from b24_mcp.signin.config import SignInConfig
from b24_mcp.signin.person import PersonAuth
from b24_mcp.signin.records import BitrixTokens, SignedIn

logger = logging.getLogger(__name__)

MAX_NAME = 200
_MEMBER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class SignInFailed(Exception):  # noqa: N818 (what the person and their client are told)
    """The portal did not sign the person in: an RFC 6749 error code for the client, and a description safe to show."""

    error: str
    description: str


def clean_name(text: str) -> str:
    """A name as sent by the portal, kept as data: no control or format characters, at most `MAX_NAME` long."""
    kept = "".join(" " if char.isspace() else char for char in text if unicodedata.category(char)[0] != "C")
    return " ".join(kept.split())[:MAX_NAME]


async def sign_in(portal: PortalClient, config: SignInConfig, code: str) -> SignedIn:
    """Exchange the portal's code for the person's tokens and find out who they are; `SignInFailed` otherwise.

    `portal` is the application's client of the portal (its HTTP pool, limits and rate limiter).
    """
    params = {
        "grant_type": "authorization_code",
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "code": code,
    }
    try:
        status, content = await portal.request_token(config.oauth_url, params)
    except B24Error as exc:
        logger.warning("The code exchange at the OAuth server failed: %s", exc.code)
        raise SignInFailed(
            "temporarily_unavailable", f"The Bitrix24 OAuth server could not be reached ({exc.code})."
        ) from None
    body = json_object(content)
    secrets = Secrets(code, config.client_secret)
    if body is not None and "error" in body:
        refusal = secrets.outside_text(body["error"], 100)
        logger.warning("The OAuth server refused the code exchange: %s (HTTP %d)", refusal, status)
        raise SignInFailed("access_denied", f"The Bitrix24 OAuth server refused the sign-in ({refusal}).")
    answer = _token_answer(body, config)
    if answer is None:
        logger.warning("The OAuth server answered the code exchange with HTTP %d and no usable token answer", status)
        raise SignInFailed("server_error", "The Bitrix24 OAuth server did not answer with a usable token.")
    tokens, claimed, member_id = answer
    user_id, name = await _profile(portal, config, tokens, claimed)
    return SignedIn(member_id=member_id, user_id=user_id, name=name, tokens=tokens)


def _user_id(value: object) -> int | None:
    """A Bitrix24 user id as sent (a number, or its digits), or None when it is not one."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31:
        return value
    return None


def _token_answer(body: dict[str, object] | None, config: SignInConfig) -> tuple[BitrixTokens, int | None, str] | None:
    """The tokens, the user id when the answer names one, and the portal's `member_id`; None when unusable."""
    if body is None:
        return None
    access, refresh = body.get("access_token"), body.get("refresh_token")
    user_id, member_id, endpoint = body.get("user_id"), body.get("member_id"), body.get("client_endpoint")
    if isinstance(endpoint, str):
        try:
            host = urlsplit(endpoint).netloc.lower()
        except ValueError:
            host = "?"
        if host != config.portal_host:
            shown = Secrets(config.client_secret).outside_text(host, 100)
            raise SignInFailed(
                "access_denied",
                f"You signed in to another Bitrix24 portal ({shown}); this server serves {config.portal_host}.",
            )
    claimed = _user_id(user_id)
    valid = (
        isinstance(access, str)
        and is_token(access)
        and (refresh is None or is_token(refresh))
        and (user_id is None or claimed is not None)
        and isinstance(member_id, str)
        and _MEMBER_ID.fullmatch(member_id) is not None
    )
    if not valid:
        return None
    assert isinstance(access, str)
    assert isinstance(member_id, str)
    return BitrixTokens(access, refresh if isinstance(refresh, str) else None), claimed, member_id


async def _profile(
    portal: PortalClient, config: SignInConfig, tokens: BitrixTokens, claimed: int | None
) -> tuple[int, str]:
    """Who signed in and their name, from the portal's `profile` (any scope) with the new token; the token
    answer's `user_id`, when it named one, must be that user."""
    # The user is not known until `profile` answers (0); this credential makes that one call and is dropped.
    auth = PersonAuth(config, user_id=claimed or 0, name="", version=0, tokens=tokens, store=None)
    try:
        answer = await portal.for_credential(auth).call("profile", {})
    except B24Error as exc:
        logger.warning("The portal did not answer profile for a new sign-in: %s", exc.code)
        raise SignInFailed("server_error", f"The portal did not say who signed in ({exc.code}).") from None
    result = answer.result if isinstance(answer.result, dict) else {}
    user_id = _user_id(result.get("ID"))
    if user_id is None:
        raise SignInFailed("server_error", "The portal's profile did not say who signed in.")
    if claimed is not None and claimed != user_id:
        raise SignInFailed("server_error", "The portal's profile is not the user the sign-in was for.")
    parts = [result.get("NAME"), result.get("LAST_NAME")]
    name = clean_name(" ".join(part for part in parts if isinstance(part, str)))
    return user_id, name or f"user {user_id}"
