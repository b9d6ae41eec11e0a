"""Configuration from the environment, or from an env file named on purpose, validated before the server serves.

No `.env` is read unless it is named: `--env-file PATH`, or `B24_ENV_FILE` in the real environment. MCP clients
start stdio servers in the user's project folder, and a cloned repository can bring a `.env` of its own
(`B24_CONFIRM=none`, or someone else's `B24_OAUTH_URL`): the working directory decides nothing here.

Addresses (`addresses`), credentials (`credentials`) and the env file (`env_file`) are checked in their own modules.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from b24_mcp.addresses import allowed_host_entry, is_loopback_host, parse_portal_url, public_origin, split_url
from b24_mcp.credentials import WEBHOOK_SHAPE, OAuthConfig, Webhook, parse_webhook_url
from b24_mcp.env_file import ENV_FILE_VARIABLE, ENV_PREFIX, env_file_names, read_env_file
from b24_mcp.errors import SettingsError

__all__ = [
    "ENV_PREFIX",
    "ConfirmMode",
    "OAuthConfig",
    "Settings",
    "SettingsError",
    "Webhook",
    "is_loopback_host",
    "load_settings",
    "parse_portal_url",
    "parse_webhook_url",
    "unknown_names",
]

MIN_SECRET_LENGTH = 32
MAKE_A_SECRET = "openssl rand -hex 32"
# What MCP hosts leave in a value they failed to fill in: an MCP Bundle's `${user_config.name}` unsubstituted, or
# a `sensitive` field still encrypted (Claude Desktop on Windows). Neither can be a real value of any setting.
_UNFILLED_PLACEHOLDER = "${user_config."
_STILL_ENCRYPTED = "__encrypted__:"
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 b64token: what an Authorization header can carry


class ConfirmMode(StrEnum):
    """How a real deletion is confirmed (`B24_CONFIRM`)."""

    AUTO = "auto"  # ask the person when the client can be asked, else require a preview token
    ELICIT = "elicit"  # always ask the person; refuse when the client cannot be asked
    TOKEN = "token"  # require a signed token from a preview
    PAGE = "page"  # sign-in only: the person approves on this server's own page, in their own browser
    NONE = "none"  # no gate: unattended scripted use only


def host_mangling(value: str) -> str | None:
    """What an MCP host did to a value it should have passed on (why it cannot be used), or None; never the value."""
    if _UNFILLED_PLACEHOLDER in value:
        return (
            "reached the server as the MCP host's unfilled placeholder ${user_config.…}: the host did not fill in "
            "this setting; set it in the server's (extension's) settings in the host"
        )
    if value.lstrip().startswith(_STILL_ENCRYPTED):
        return (
            "reached the server still encrypted by the MCP host (__encrypted__:…), a known Claude Desktop bug on "
            "Windows; update the host, or enter the value again in the extension's settings"
        )
    return None


def _default_audit_log() -> Path:
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path("~/.local/state")  # a relative XDG_* is to be ignored
    return base / "b24-mcp" / "audit.jsonl"


class Settings(BaseSettings):
    """Everything b24-mcp reads from `B24_*` variables (see `.env.example`); an env file only when named."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=None,  # never a `.env` that merely lies in the working directory: see `load_settings`
        env_file_encoding="utf-8-sig",
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
    timeout: float = Field(default=75.0, gt=0, le=600)  # above the portal's own 60 s: see portal/wire.py
    read_only: bool = False
    allowed_entity_types: Annotated[frozenset[int] | None, NoDecode] = None
    audit_log: Path = Field(default_factory=_default_audit_log)
    rate_per_second: float = Field(default=2.0, gt=0, le=1000)
    rate_burst: int = Field(default=50, ge=1, le=10_000)
    max_retries: int = Field(default=3, ge=0, le=10)
    call_deadline: float = Field(default=60.0, gt=0, le=3600)
    batch_max: int = Field(default=5000, ge=1, le=50_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    mcp_http_token: SecretStr | None = None
    mcp_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    trusted_proxies: Annotated[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], NoDecode] = ()
    metrics_token: SecretStr | None = None  # what a Prometheus scraper sends for /metrics (serving/probes.py)
    metrics_user_ids: bool = False  # label tool calls with the person's user id (one series per person)
    database_url: SecretStr | None = None  # state shared by replicas (b24_mcp/postgres); holds a password
    public_url: str | None = None  # sign-in (b24_mcp/signin): where MCP clients reach this server
    state_dir: Path = Field(default_factory=lambda: _default_audit_log().parent)  # sign-in's people store

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
        parts = split_url(value, "must be an https:// URL")
        loopback = parts.scheme == "http" and is_loopback_host(parts.hostname or "")
        if (parts.scheme != "https" and not loopback) or parts.username or parts.fragment:
            raise ValueError("must be an https:// URL")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None, info: Any) -> str | None:
        if (value is None or not value.strip()) and info.data.get("confirm") is ConfirmMode.PAGE:
            raise ValueError(
                f"{ENV_PREFIX}CONFIRM=page needs sign-in ({ENV_PREFIX}PUBLIC_URL is not set): the person approves "
                "each deletion on this server's own page, in a browser signed in to the portal"
            )
        return public_origin(value) if value is not None and value.strip() else None

    @field_validator("confirm_secret", "mcp_http_token", "metrics_token")
    @classmethod
    def _check_secret(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"is shorter than {MIN_SECRET_LENGTH} characters, which could be guessed; "
                f"make a random one with: {MAKE_A_SECRET}"
            )
        if info.field_name in ("mcp_http_token", "metrics_token") and not _BEARER_TOKEN.fullmatch(secret):
            raise ValueError(
                "has characters an Authorization header cannot carry (spaces, quotes, non-ASCII); "
                f"make a random one with: {MAKE_A_SECRET}"
            )
        return value

    @field_validator("token_file", "ca_bundle", "audit_log", "state_dir", mode="before")
    @classmethod
    def _absolute_path(cls, value: Any) -> Any:
        if not isinstance(value, (str, os.PathLike)):
            return value  # None, or a wrong type that pydantic names
        text = os.fspath(value)
        if not isinstance(text, str) or "\x00" in text:
            raise ValueError("is not a usable path")
        try:
            path = Path(text).expanduser()
        except RuntimeError:
            raise ValueError("starts with ~ but this user has no home folder; give an absolute path") from None
        if not path.is_absolute():
            raise ValueError(
                "must be an absolute path: a relative one would depend on the folder the server is started in"
            )
        return path

    @field_validator("audit_log")
    @classmethod
    def _check_audit_log(cls, value: Path) -> Path:
        if value.is_dir():
            raise ValueError("is a folder; give the journal's file name (e.g. …/b24-mcp/audit.jsonl)")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _check_ca_bundle(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        import ssl  # only when a bundle is set; the portal client imports it anyway

        try:
            if not value.is_file():
                raise ValueError
            ssl.create_default_context(cafile=str(value))  # what the portal client does on its first call
        except (OSError, ValueError):
            raise ValueError("is not a readable PEM file of certificates") from None
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

    @field_validator("mcp_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        entries: Iterable[Any] = value.split(",") if isinstance(value, str) else value
        if not isinstance(entries, Iterable):
            return value
        return tuple(allowed_host_entry(entry.strip()) for entry in entries if isinstance(entry, str) and entry.strip())

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        networks = []
        for entry in filter(None, (part.strip() for part in value.split(","))):
            try:
                networks.append(ipaddress.ip_network(entry.removeprefix("[").removesuffix("]"), strict=False))
            except ValueError:
                raise ValueError(
                    f"has {entry!r}, which is neither an IP address nor a network like 10.0.0.0/8"
                ) from None
        return tuple(networks)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        if not value.get_secret_value().strip().startswith(("postgresql://", "postgres://")):
            raise ValueError("is not a PostgreSQL URL; expected postgresql://user:password@host:5432/database")
        if info.data.get("confirm_secret") is None:
            raise ValueError(
                "needs B24_CONFIRM_SECRET too: the replicas sharing the database must share the secret that signs "
                f"confirmation tokens and seals the stored OAuth tokens; make one with: {MAKE_A_SECRET}"
            )
        import importlib.util  # only when a database is configured

        if any(importlib.util.find_spec(name) is None for name in ("psycopg", "psycopg_pool", "cryptography")):
            raise ValueError("needs the PostgreSQL driver, which is not installed: pip install 'b24-mcp[postgres]'")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("confirm", mode="before")
    @classmethod
    def _lower_confirm(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    # Last of the "before" validators, so it runs first: a mangled value gets this line, not a type error.
    @field_validator("*", mode="before")
    @classmethod
    def _refuse_mangled(cls, value: Any) -> Any:
        if isinstance(value, str):
            mangled = host_mangling(value)
            if mangled is not None:
                raise ValueError(mangled)
        return value

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
            hint = f"give the incoming-webhook base {WEBHOOK_SHAPE}, or {ENV_PREFIX}PORTAL_URL and an OAuth token"
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


def for_sandbox(settings: Settings) -> Settings:
    """The sandbox keeps its own journal, `sandbox-audit.jsonl` beside the real one: a demo never writes there."""
    return settings.model_copy(update={"audit_log": settings.audit_log.with_name("sandbox-audit.jsonl")})


def load_settings(*, env_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read and validate the settings; `SettingsError` has one line per problem, each naming its variable.

    Values come from `overrides`, then the environment, then the env file: `env_file` (`--env-file`), else the
    one `B24_ENV_FILE` in the environment names; never a `.env` that merely lies in the working directory.
    """
    if env_file is None:
        env_file = os.environ.get(ENV_FILE_VARIABLE) or None
    if env_file is not None:
        read_env_file(
            env_file, Settings.model_fields
        )  # one clear line for a file that is missing, not a regular file, or malformed
    try:
        # Overrides first, then the environment, then the file.
        values: dict[str, Any] = {"_env_file": env_file, **overrides}
        return Settings(**values)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_input=False, include_url=False):
            name = ENV_PREFIX + str(error["loc"][0]).upper() if error["loc"] else "configuration"
            message = str(error["msg"]).removeprefix("Value error, ")
            if message.startswith(ENV_PREFIX):  # a line that names its variables itself
                lines.append(message)
                continue
            if error["type"] == "bool_parsing":
                lines.append(f"{name} must be true or false (1/0, yes/no and on/off are accepted too)")
                continue
            lines.append(f"{name} {message}" if error["type"] == "value_error" else f"{name}: {message}")
        raise SettingsError(lines) from None


def unknown_names(
    environ: Mapping[str, str] | None = None, *, env_file: str | os.PathLike[str] | None = None
) -> list[str]:
    """One line for each `B24_*` name, in the environment or the env file, that names no setting (a misspelling
    is otherwise silently ignored). The env file is the one named, else `B24_ENV_FILE`'s, as `load_settings` reads."""
    environ = os.environ if environ is None else environ
    given = set(environ)
    env_file = env_file or environ.get(ENV_FILE_VARIABLE) or None
    if env_file is not None:
        given |= env_file_names(env_file)
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | {ENV_FILE_VARIABLE}
    ours = {name.upper() for name in given if name.upper().startswith(ENV_PREFIX)}
    names = sorted(name for name in ours - known if not name.startswith(_NOT_SETTINGS))
    if not names:
        return []
    import difflib  # only when there is a misspelling to name

    lines = []
    for name in names:
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        guess = f"; did you mean {close[0]}?" if close else ""
        lines.append(f"{name} is not a b24-mcp setting and is ignored{guess}")
    return lines


_NOT_SETTINGS = ("B24_TEST_", "B24_BENCH_")  # the test suite's and the benchmarks' own variables
