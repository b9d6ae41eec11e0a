"""How requests to the portal are authenticated: an incoming webhook, or an OAuth grant that refreshes itself.

An OAuth access token lasts an hour. On `expired_token` the portal client asks `OAuthSession.refresh`, which
refreshes once for all concurrent callers, and saves the rotated pair to the token file (mode 0600, atomically).
Tokens travel in request bodies, never in URLs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio
import httpx2

from b24_mcp.errors import PortalError, TransportError
from b24_mcp.settings import OAuthConfig, Webhook

logger = logging.getLogger(__name__)


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

    def prepare(self, method: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The URL and JSON body for a call of `method`."""
        ...

    async def refresh(self, http: httpx2.AsyncClient, seen_generation: int) -> None:
        """Renew the credential, unless another caller already did since `seen_generation`."""
        ...


class WebhookAuth:
    """An incoming webhook: the secret is part of the URL's path, which is why URLs are never logged."""

    def __init__(self, webhook: Webhook) -> None:
        self._webhook = webhook

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

    def prepare(self, method: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._webhook.base_url + method, dict(params)

    async def refresh(self, http: httpx2.AsyncClient, seen_generation: int) -> None:
        raise RuntimeError("a webhook cannot be refreshed")


class OAuthSession:
    """An application's OAuth grant for one portal, refreshed on expiry and persisted across restarts."""

    def __init__(self, config: OAuthConfig) -> None:
        self._config = config
        self._access = config.access_token
        self._refresh = config.refresh_token
        self._user_id: int | None = None
        self._generation = 0
        self._lock = anyio.Lock()
        saved = read_token_file(config.token_file, config.host) if config.token_file else None
        if saved is not None:
            self._access = str(saved["access_token"])
            self._refresh = str(saved.get("refresh_token") or "") or self._refresh
            self._user_id = saved["user_id"] if isinstance(saved.get("user_id"), int) else None

    def __repr__(self) -> str:
        return f"OAuthSession(host={self.host!r})"

    @property
    def host(self) -> str:
        return self._config.host

    @property
    def user_id(self) -> int | None:
        return self._user_id

    @property
    def identity(self) -> str:
        return f"{self._config.host}/oauth/{self._config.client_id or '-'}"

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def can_refresh(self) -> bool:
        return bool(self._refresh and self._config.client_id and self._config.client_secret)

    def prepare(self, method: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return self._config.rest_base + method, {**params, "auth": self._access}

    async def refresh(self, http: httpx2.AsyncClient, seen_generation: int) -> None:
        """Exchange the refresh token for a new pair; concurrent callers wait for one exchange."""
        async with self._lock:
            if self._generation != seen_generation:
                return  # another call refreshed while this one waited
            form = {
                "grant_type": "refresh_token",
                "client_id": self._config.client_id or "",
                "client_secret": self._config.client_secret or "",
                "refresh_token": self._refresh or "",
            }
            try:
                response = await http.post(self._config.oauth_url, data=form)
            except httpx2.TransportError as exc:
                raise TransportError(
                    "PORTAL_UNREACHABLE",
                    f"Could not reach the OAuth server to refresh the access token ({type(exc).__name__}).",
                    retryable=True,
                    maybe_sent=False,
                ) from None
            body = _json(response)
            if "error" in body or not body.get("access_token"):
                error = PortalError(
                    str(body.get("error", "BAD_OAUTH_RESPONSE")),
                    str(body.get("error_description") or ""),
                    http_status=response.status_code,
                )
                error.hint = (
                    "The OAuth server refused to refresh the access token: the application must be re-authorised "
                    "in the portal, and B24_ACCESS_TOKEN / B24_REFRESH_TOKEN set anew."
                )
                raise error
            self._access = str(body["access_token"])
            self._refresh = str(body.get("refresh_token") or self._refresh or "")
            if isinstance(body.get("user_id"), int):
                self._user_id = body["user_id"]
            self._generation += 1
            logger.info("Refreshed the OAuth access token for %s", self.host)
            if self._config.token_file is not None:
                await anyio.to_thread.run_sync(self._save, self._config.token_file)

    def _save(self, path: Path) -> None:
        data = {
            "portal": self.host,
            "access_token": self._access,
            "refresh_token": self._refresh,
            "user_id": self._user_id,
        }
        try:
            write_private_file(path, json.dumps(data).encode())
        except OSError as exc:
            logger.error(
                "Could not save the refreshed tokens to B24_TOKEN_FILE (%s); after a restart the application "
                "will need to be re-authorised.",
                exc.strerror or type(exc).__name__,
            )


def _json(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return {"error": "BAD_OAUTH_RESPONSE", "error_description": f"HTTP {response.status_code}, not JSON"}
    return body if isinstance(body, dict) else {"error": "BAD_OAUTH_RESPONSE"}


def read_token_file(path: Path, host: str) -> dict[str, Any] | None:
    """The tokens saved for `host`, or None when there are none usable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        logger.warning("B24_TOKEN_FILE could not be read; using the configured tokens")
        return None
    if not isinstance(data, dict) or data.get("portal") != host or not data.get("access_token"):
        return None
    return data


def write_private_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, readable by the owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def make_auth(credentials: Webhook | OAuthConfig) -> WebhookAuth | OAuthSession:
    """The runtime credential for the configured one."""
    return WebhookAuth(credentials) if isinstance(credentials, Webhook) else OAuthSession(credentials)
