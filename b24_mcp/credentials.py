"""The portal credentials the settings name: an incoming webhook, or an application's OAuth grant."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

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
    """Check a webhook base URL and split it; `ValueError` messages never contain the URL."""
    problem = f"is not an incoming-webhook base; expected {WEBHOOK_SHAPE}"
    parts = split_url(url, problem)
    if parts.scheme not in ("https", "http"):
        raise ValueError(problem)
    if parts.scheme == "http" and not allow_http:
        raise ValueError(
            "uses http://, which would send the webhook code in clear text; use https:// "
            "(or set B24_ALLOW_HTTP=true for a portal on a trusted network)"
        )
    match = _WEBHOOK_PATH.fullmatch(parts.path)
    if parts.query or parts.fragment or parts.username or match is None:
        raise ValueError(problem)
    netloc = parts.netloc.lower()
    base = f"{parts.scheme}://{netloc}/rest/{match['user']}/{match['code']}/"
    return Webhook(scheme=parts.scheme, host=netloc, user_id=int(match["user"]), base_url=base)


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
