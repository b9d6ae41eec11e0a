"""Configuration from the environment and a `.env` file, validated before the server starts serving."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "B24_"
_WEBHOOK_SHAPE = "https://<portal>/rest/<userId>/<code>/"
_WEBHOOK_PATH = re.compile(r"/rest/(?P<user>[0-9]+)/(?P<code>[A-Za-z0-9_.~-]+)/?")


class ConfirmMode(StrEnum):
    """How a real deletion is confirmed (`B24_CONFIRM`)."""

    AUTO = "auto"  # ask the person when the client can be asked, else require a preview token
    ELICIT = "elicit"  # always ask the person; refuse when the client cannot be asked
    TOKEN = "token"  # require a signed token from a preview
    NONE = "none"  # no gate: unattended scripted use only


class SettingsError(Exception):
    """Configuration that cannot work; each line names the variable and never shows a secret."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


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
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"is not an incoming-webhook base; expected {_WEBHOOK_SHAPE}")
    if parts.scheme == "http" and not allow_http:
        raise ValueError(
            "uses http://, which would send the webhook code in clear text; use https:// "
            "(or set B24_ALLOW_HTTP=true for a portal on a trusted network)"
        )
    match = _WEBHOOK_PATH.fullmatch(parts.path)
    if parts.query or parts.fragment or parts.username or match is None:
        raise ValueError(f"is not an incoming-webhook base; expected {_WEBHOOK_SHAPE}")
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


def parse_portal_url(url: str, *, allow_http: bool) -> tuple[str, str]:
    """`https://acme.bitrix24.com`, with or without a trailing slash or `/rest/`, as (scheme, host)."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.username:
        raise ValueError("is not a portal address; expected https://<portal> (e.g. https://acme.bitrix24.com)")
    if parts.path.rstrip("/") not in ("", "/rest"):
        raise ValueError("is not a portal address; expected https://<portal> (e.g. https://acme.bitrix24.com)")
    if parts.scheme == "http" and not allow_http:
        raise ValueError("uses http://; use https:// (or set B24_ALLOW_HTTP=true for a portal on a trusted network)")
    return parts.scheme, parts.netloc.lower()


def _default_audit_log() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "b24-mcp" / "audit.jsonl"


class Settings(BaseSettings):
    """Everything b24-mcp reads from `B24_*` variables (see `.env.example`)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        validate_default=True,
    )

    allow_http: bool = False
    webhook_url: SecretStr | None = None
    portal_url: str | None = None
    access_token: SecretStr | None = None
    refresh_token: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    oauth_url: str = "https://oauth.bitrix.info/oauth/token/"
    token_file: Path | None = None
    confirm: ConfirmMode = ConfirmMode.AUTO
    confirm_secret: SecretStr | None = None
    confirm_ttl: int = Field(default=300, ge=10, le=86_400)
    ca_bundle: Path | None = None
    timeout: float = Field(default=30.0, gt=0, le=600)
    read_only: bool = False
    allowed_entity_types: Annotated[frozenset[int] | None, NoDecode] = None
    audit_log: Path = Field(default_factory=_default_audit_log)
    rate_per_second: float = Field(default=2.0, gt=0, le=1000)
    rate_burst: int = Field(default=50, ge=1, le=10_000)
    max_retries: int = Field(default=3, ge=0, le=10)
    call_deadline: float = Field(default=60.0, gt=0, le=3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    mcp_http_token: SecretStr | None = None

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            parse_webhook_url(value.get_secret_value(), allow_http=bool(info.data.get("allow_http")))
            return value
        return None

    @field_validator("portal_url")
    @classmethod
    def _check_portal(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            parse_portal_url(value, allow_http=bool(info.data.get("allow_http")))
        return value

    @field_validator("oauth_url")
    @classmethod
    def _check_oauth_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")):
            raise ValueError("must be an https:// URL")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _check_ca_bundle(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("is not a readable PEM file")
        return value

    @field_validator("allowed_entity_types", mode="before")
    @classmethod
    def _split_types(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if not all(part.isdigit() and int(part) > 0 for part in parts):
                raise ValueError("must be a comma-separated list of positive entityTypeIds, e.g. 2,1038")
            return frozenset(int(part) for part in parts) or None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @property
    def webhook(self) -> Webhook:
        """The configured webhook; `SettingsError` when there is none."""
        credentials = self.credentials
        if not isinstance(credentials, Webhook):
            raise SettingsError([f"{ENV_PREFIX}WEBHOOK_URL is not set"])
        return credentials

    @property
    def credentials(self) -> Webhook | OAuthConfig:
        """The webhook, or the OAuth grant; `SettingsError` naming the variables when neither is complete."""
        if self.webhook_url is not None and self.portal_url is not None:
            raise SettingsError([f"{ENV_PREFIX}WEBHOOK_URL and {ENV_PREFIX}PORTAL_URL are both set: choose one"])
        if self.webhook_url is not None:
            return parse_webhook_url(self.webhook_url.get_secret_value(), allow_http=self.allow_http)
        if self.portal_url is None:
            hint = f"give the incoming-webhook base {_WEBHOOK_SHAPE}, or {ENV_PREFIX}PORTAL_URL and an OAuth token"
            raise SettingsError([f"{ENV_PREFIX}WEBHOOK_URL is not set: {hint} (or try --sandbox)"])
        if self.access_token is None and (self.token_file is None or not self.token_file.exists()):
            raise SettingsError(
                [
                    f"{ENV_PREFIX}ACCESS_TOKEN is not set: {ENV_PREFIX}PORTAL_URL needs an OAuth access token "
                    f"(or a {ENV_PREFIX}TOKEN_FILE saved by an earlier run)"
                ]
            )
        scheme, host = parse_portal_url(self.portal_url, allow_http=self.allow_http)

        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        return OAuthConfig(
            scheme=scheme,
            host=host,
            rest_base=f"{scheme}://{host}/rest/",
            access_token=secret(self.access_token) or "",
            refresh_token=secret(self.refresh_token),
            client_id=self.client_id,
            client_secret=secret(self.client_secret),
            oauth_url=self.oauth_url,
            token_file=self.token_file,
        )


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; `SettingsError` has one line per problem, each naming its variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_input=False, include_url=False):
            name = ENV_PREFIX + str(error["loc"][0]).upper() if error["loc"] else "configuration"
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{name} {message}" if error["type"] == "value_error" else f"{name}: {message}")
        raise SettingsError(lines) from None
