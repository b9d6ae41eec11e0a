"""The portal credentials the settings name: an incoming webhook, or an application's OAuth grant."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from b24_mcp.addresses import split_url

WEBHOOK_SHAPE = "https://<portal>/rest/<userId>/<code>/"
_WEBHOOK_PATH = re.compile(r"/rest/(?P<user>[0-9]+)/(?P<code>[A-Za-z0-9_.~-]+)/?")


@dataclass(frozen=True, repr=False)
class Webhook:
    """An incoming webhook: where the portal is, whose rights calls run with, and the secret base URL."""

    scheme: str
    host: str  # host[:port]; not secret
    user_id: int
    base_url: str  # contains the webhook code: secret

    def __repr__(self) -> str:
        return f"Webhook(host={self.host!r}, user_id={self.user_id})"


def parse_webhook_url(url: str, *, allow_http: bool) -> Webhook:
    """Check a webhook base URL and split it; `ValueError` messages say which part is wrong, never the code."""
    problem = f"is not an incoming-webhook base; expected {WEBHOOK_SHAPE}"
    try:
        parts = split_url(url, problem)
    except ValueError:
        raise ValueError(_which_part(url.strip(), problem)) from None
    if parts.scheme not in ("https", "http"):
        raise ValueError(_which_part(url.strip(), problem))
    if parts.scheme == "http" and not allow_http:
        raise ValueError(
            "uses http://, which would send the webhook code in clear text; use https:// "
            "(or set B24_ALLOW_HTTP=true for a portal on a trusted network)"
        )
    match = _WEBHOOK_PATH.fullmatch(parts.path)
    if parts.query or parts.fragment or parts.username or match is None:
        raise ValueError(_which_part(url.strip(), problem))
    netloc = parts.netloc.lower()
    base = f"{parts.scheme}://{netloc}/rest/{match['user']}/{match['code']}/"
    return Webhook(scheme=parts.scheme, host=netloc, user_id=int(match["user"]), base_url=base)


def _which_part(url: str, problem: str) -> str:
    """`problem`, and which part of `url` is wrong when that can be told; only parts that hold no code are named."""
    if url[:1] in "\"'" and url[:1] and url[-1:] == url[:1]:
        return f"{problem}; it is in quotes: remove them"
    scheme, separator, _ = url.partition("://")
    if not separator:
        return f"{problem}; it does not start with https://"
    if scheme.lower() not in ("https", "http"):
        shown = f" ({scheme}://)" if _SHOWABLE.fullmatch(scheme) else ""
        return f"{problem}; it does not start with https://{shown}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port out of range raises here)
    except ValueError:
        return problem
    if parts.username is not None:
        return f"{problem}; it has a user@ part before the portal's name: remove it"
    if parts.query or parts.fragment:
        return f"{problem}; it has a ?query or #fragment after the code: remove it"
    segments = [segment for segment in parts.path.split("/") if segment]
    if not segments or segments[0] != "rest":
        if segments and _SHOWABLE.fullmatch(segments[0]):
            return f"{problem}; its path starts with /{segments[0]}/ instead of /rest/"
        return f"{problem}; its path does not start with /rest/"
    if len(segments) < 3:
        return f"{problem}; the user id or the code after /rest/ is missing"
    if not segments[1].isdigit():
        return f"{problem}; the user id after /rest/ is not a number"
    if len(segments) > 3:
        method = segments[3] if _METHOD.fullmatch(segments[3]) else "a method name"
        return f"{problem}; it ends with {method} after the code: give the base only, ending with the code and /"
    return problem


_SHOWABLE = re.compile(r"[A-Za-z]{1,12}")  # a word that cannot be a webhook code (codes mix letters and digits)
_METHOD = re.compile(r"[a-z]+(\.[a-z_]+)+")  # crm.item.delete, crm.item.delete.json


@dataclass(frozen=True, repr=False)
class OAuthConfig:
    """A Bitrix24 application's OAuth grant: the portal, the tokens and what refreshing them takes."""

    scheme: str
    host: str
    rest_base: str  # https://<portal>/rest/
    access_token: str
    refresh_token: str | None
    client_id: str | None
    client_secret: str | None
    oauth_url: str
    token_file: Path | None

    def __repr__(self) -> str:
        return f"OAuthConfig(host={self.host!r})"
