"""Signing a person in at the portal: the authorization-code exchange and who the portal says signed in.

Everything that comes back is hostile until checked: the code exchange's answer must be a token answer for this
portal (its `client_endpoint` names the configured portal; `member_id` and `user_id` have their shapes), and the
person is who the portal's `profile` says, with the new token, not what the browser's redirect claimed.
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
    form = {
        "grant_type": "authorization_code",
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "code": code,
    }
    try:
        status, content = await portal.post_form(config.oauth_url, form)
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
    tokens, user_id, member_id = _token_answer(body, config)
    if tokens is None or user_id is None or member_id is None:
        logger.warning("The OAuth server answered the code exchange with HTTP %d and no usable token answer", status)
        raise SignInFailed("server_error", "The Bitrix24 OAuth server did not answer with a usable token.")
    name = await _profile_name(portal, config, user_id, tokens)
    return SignedIn(member_id=member_id, user_id=user_id, name=name, tokens=tokens)


def _token_answer(
    body: dict[str, object] | None, config: SignInConfig
) -> tuple[BitrixTokens | None, int | None, str | None]:
    if body is None:
        return None, None, None
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
    if isinstance(user_id, str) and user_id.isdigit():
        user_id = int(user_id)
    valid = (
        isinstance(access, str)
        and is_token(access)
        and (refresh is None or is_token(refresh))
        and isinstance(user_id, int)
        and not isinstance(user_id, bool)
        and 0 < user_id < 2**31
        and isinstance(member_id, str)
        and _MEMBER_ID.fullmatch(member_id) is not None
    )
    if not valid:
        return None, None, None
    assert isinstance(access, str)
    assert isinstance(user_id, int)
    assert isinstance(member_id, str)
    return BitrixTokens(access, refresh if isinstance(refresh, str) else None), user_id, member_id


async def _profile_name(portal: PortalClient, config: SignInConfig, user_id: int, tokens: BitrixTokens) -> str:
    """The person's name from the portal's `profile` (any scope), which must be the user the token is for."""
    auth = PersonAuth(config, user_id=user_id, name="", version=0, tokens=tokens, store=None)
    try:
        answer = await portal.for_credential(auth).call("profile", {})
    except B24Error as exc:
        logger.warning("The portal did not answer profile for a new sign-in: %s", exc.code)
        raise SignInFailed("server_error", f"The portal did not say who signed in ({exc.code}).") from None
    result = answer.result if isinstance(answer.result, dict) else {}
    if str(result.get("ID", "")) != str(user_id):
        raise SignInFailed("server_error", "The portal's profile is not the user the sign-in was for.")
    parts = [result.get("NAME"), result.get("LAST_NAME")]
    name = clean_name(" ".join(part for part in parts if isinstance(part, str)))
    return name or f"user {user_id}"
