"""What sign-in needs from the settings, checked as a whole: one line per problem, naming the variable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from b24_mcp.settings import ENV_PREFIX, OAuthConfig, Settings, SettingsError, parse_portal_url

MCP_PATH = "/mcp"  # where transport.py serves MCP; the protected resource is PUBLIC_URL + this
CALLBACK_PATH = "/oauth/callback"
CONSENT_PATH = "/oauth/consent"
DATABASE_NAME = "people.sqlite3"
KEY_NAME = "people.key"


@dataclass(frozen=True, repr=False)
class SignInConfig:
    """The public address, the portal and the Bitrix24 application people sign in through."""

    issuer: str  # B24_PUBLIC_URL, normalised: scheme://host[:port], no path; the authorization server's id
    portal_scheme: str
    portal_host: str
    client_id: str
    client_secret: str  # secret
    oauth_url: str
    state_dir: Path

    def __repr__(self) -> str:
        return f"SignInConfig(issuer={self.issuer!r}, portal={self.portal_host!r})"

    @property
    def resource(self) -> str:
        """The protected resource (RFC 8707, RFC 9728): the MCP endpoint's URL."""
        return self.issuer + MCP_PATH

    @property
    def callback_url(self) -> str:
        """Where the portal sends the person back: the Bitrix24 application's redirect URI."""
        return self.issuer + CALLBACK_PATH

    @property
    def rest_base(self) -> str:
        return f"{self.portal_scheme}://{self.portal_host}/rest/"

    @property
    def database(self) -> Path:
        return self.state_dir / DATABASE_NAME

    @property
    def key_file(self) -> Path:
        return self.state_dir / KEY_NAME

    def portal_authorize_url(self, state: str) -> str:
        """The portal's sign-in page for this application; the portal redirects to its registered URI."""
        query = urlencode({"client_id": self.client_id, "state": state})
        return f"{self.portal_scheme}://{self.portal_host}/oauth/authorize/?{query}"

    def no_one(self) -> OAuthConfig:
        """The portal without anyone's credentials: the application's base client, which never calls as itself."""
        return OAuthConfig(
            scheme=self.portal_scheme,
            host=self.portal_host,
            rest_base=self.rest_base,
            access_token="",
            refresh_token=None,
            client_id=self.client_id,
            client_secret=self.client_secret,
            oauth_url=self.oauth_url,
            token_file=None,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInConfig:
        """The sign-in configuration; `SettingsError` naming every variable that is missing or in the way."""
        if settings.public_url is None:
            raise SettingsError([f"{ENV_PREFIX}PUBLIC_URL is not set: sign-in is off"])
        lines = []
        for name, value in (
            ("PORTAL_URL", settings.portal_url),
            ("CLIENT_ID", settings.client_id),
            ("CLIENT_SECRET", settings.client_secret),
        ):
            if value is None:
                lines.append(
                    f"{ENV_PREFIX}{name} is not set: sign-in (B24_PUBLIC_URL) needs the portal and the Bitrix24 "
                    "application people sign in through"
                )
        in_the_way: list[tuple[str, object, str]] = [
            ("WEBHOOK_URL", settings.webhook_url, "a webhook acts as its one user"),
            ("ACCESS_TOKEN", settings.access_token, "a fixed access token acts as its one user"),
            ("REFRESH_TOKEN", settings.refresh_token, "a fixed grant acts as its one user"),
            ("TOKEN_FILE", settings.token_file, "each person's tokens are kept in the people store"),
            ("MCP_HTTP_TOKEN", settings.mcp_http_token, "each person gets their own token by signing in"),
        ]
        for name, given, why in in_the_way:
            if given is not None:
                lines.append(f"{ENV_PREFIX}{name} is set, but with sign-in (B24_PUBLIC_URL) {why}: unset it")
        if lines:
            raise SettingsError(lines)
        assert settings.portal_url is not None
        assert settings.client_id is not None
        assert settings.client_secret is not None
        scheme, host = parse_portal_url(settings.portal_url, allow_http=settings.allow_http)
        return cls(
            issuer=settings.public_url,
            portal_scheme=scheme,
            portal_host=host,
            client_id=settings.client_id,
            client_secret=settings.client_secret.get_secret_value(),
            oauth_url=settings.oauth_url,
            state_dir=settings.state_dir,
        )
