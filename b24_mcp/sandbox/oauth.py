"""OAuth 2.0 as a portal and its authorization server do it (spec §5; docs settings/oauth/index.md).

* ``/oauth/authorize/?client_id=…&state=…`` signs in the person the portal has a session for
  (``Portal.sign_in_as``) and redirects (302) to the application's redirect URI **as registered**
  (``add_app(redirect_uri=…)``; a ``redirect_uri`` in the request is not used) with ``code`` (valid 30 s, one use),
  ``state``, ``domain`` (the portal's address), ``member_id``, ``scope`` (the application's scopes) and
  ``server_domain`` (the authorization server's name, ``OAuthServer.domain``: never the portal's).
  An application without a redirect URI gets the code shown on a page (docs: "the simplified first authorization
  code will be displayed to the user directly on the page"); nobody signed in gets the sign-in page (200, no
  redirect) [INFER]; an unknown ``client_id`` gets an error page ("the user will see an appropriate error
  message"; 400 here [INFER]).
* ``/oauth/token/`` exchanges ``grant_type=authorization_code`` (``client_id``, ``client_secret``, ``code``) or
  ``grant_type=refresh_token`` (``refresh_token``; it rotates) for a token pair acting as that user. The parameters
  come as a GET query string, the one form documented (settings/oauth/index.md, auto-renewal.md; spec §10); a
  POSTed form is read as no parameters (``invalid_request``) unless ``accepts_form`` is set, as on the one host
  known to take it. Like the documentation's example, the code exchange's answer has neither ``user_id`` nor
  ``expires`` (``code_answer_names_user`` puts them in, as real answers were reported to); the refresh answer has
  both. Its ``domain`` is the authorization server's name, not the portal's.
* Tokens belong to one (application, user, scopes); calls with them act as that user with that user's rights.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from b24_mcp.sandbox.envelope import Answer, RestError, html_answer

__all__ = ["App", "Grant", "OAuthServer"]


@dataclass
class App:
    """An OAuth application installed on the portal (a local application: status ``L``)."""

    client_id: str
    secret: str
    redirect_uri: str | None = None
    scopes: frozenset[str] = frozenset({"crm"})
    status: str = "L"


@dataclass
class Grant:
    """What a token or an authorization code stands for."""

    client_id: str
    user_id: int
    scopes: frozenset[str]
    expires_at: float = math.inf


class OAuthServer:
    """Applications, the signed-in person, authorization codes and token pairs."""

    def __init__(self, *, access_ttl: float = 3600.0, code_ttl: float = 30.0) -> None:
        self.access_ttl = access_ttl
        self.code_ttl = code_ttl
        self.domain = "oauth.bitrix.info"  # how the authorization server names itself (served at the portal's address)
        self.accepts_form = False
        self.code_answer_names_user = False
        self.apps: dict[str, App] = {}
        self.signed_in: int | None = None
        self.token_requests = 0
        self._codes: dict[str, Grant] = {}
        self._access_tokens: dict[str, Grant] = {}
        self._refresh_tokens: dict[str, Grant] = {}

    def issue_tokens(self, client_id: str, user_id: int, scopes: frozenset[str]) -> tuple[str, str]:
        if client_id not in self.apps:
            raise ValueError(f"unknown OAuth application {client_id}")
        access, refresh, _ = self._issue(Grant(client_id, user_id, frozenset(scopes)))
        return access, refresh

    def expire_access_tokens(self) -> None:
        for grant in self._access_tokens.values():
            grant.expires_at = min(grant.expires_at, time.time() - 1)

    def grant(self, access_token: str) -> Grant:
        """The live grant of an access token presented to the REST API."""
        grant = self._access_tokens.get(access_token)
        if grant is None:
            raise RestError(401, "invalid_token", "Unable to get application by token")
        if grant.expires_at <= time.time():
            raise RestError(401, "expired_token", "The access token provided has expired")
        return grant

    def authorize(self, params: dict[str, Any], portal_domain: str, member_id: str) -> tuple[Answer, int | None]:
        """``/oauth/authorize/``: the answer for the person's browser, and who was signed in."""
        client_id = _text_param(params, "client_id")
        if client_id is None:
            raise RestError(400, "invalid_request", 'No "client_id" parameter found')
        app = self.apps.get(client_id)
        if app is None:
            raise RestError(400, "invalid_client", "Application not found")
        if self.signed_in is None:
            return html_answer(200, "Authorization", "Sign in to your Bitrix24 to continue."), None
        code = secrets.token_hex(16)
        self._codes[code] = Grant(client_id, self.signed_in, app.scopes, time.time() + self.code_ttl)
        if app.redirect_uri is None:
            return html_answer(200, "Authorization code", f"Your authorization code: {code}"), self.signed_in
        query: dict[str, str] = {"code": code}
        state = _text_param(params, "state")
        if state is not None:
            query["state"] = state
        query |= {
            "domain": portal_domain,
            "member_id": member_id,
            "scope": ",".join(sorted(app.scopes)),
            "server_domain": self.domain,
        }
        separator = "&" if "?" in app.redirect_uri else "?"
        location = app.redirect_uri + separator + urlencode(query)
        return Answer(302, b"", {"location": location, "content-type": "text/html; charset=utf-8"}), self.signed_in

    def exchange(self, params: dict[str, Any], origin: str, member_id: str) -> tuple[dict[str, Any], int]:
        """``/oauth/token/``: the token pair's body and the user it acts as."""
        grant_type = _text_param(params, "grant_type")
        if grant_type is None:
            raise RestError(400, "invalid_request", 'No "grant_type" parameter found')
        if grant_type not in ("refresh_token", "authorization_code"):
            raise RestError(400, "invalid_request", f'Grant type "{grant_type}" is not supported')
        proof = "refresh_token" if grant_type == "refresh_token" else "code"
        values: dict[str, str] = {}
        for name in ("client_id", "client_secret", proof):
            value = _text_param(params, name)
            if value is None:
                raise RestError(400, "invalid_request", f'No "{name}" parameter found')
            values[name] = value
        app = self.apps.get(values["client_id"])
        if app is None or not secrets.compare_digest(app.secret.encode(), values["client_secret"].encode()):
            raise RestError(401, "invalid_client", "Invalid client credentials")
        grant = self._redeem(proof, values[proof], app.client_id)
        access, refresh, live = self._issue(grant)
        body: dict[str, Any] = {
            "access_token": access,
            "client_endpoint": f"{origin}/rest/",
            "domain": self.domain,
            "expires": int(live.expires_at),
            "expires_in": math.ceil(self.access_ttl),
            "member_id": member_id,
            "refresh_token": refresh,
            "scope": ",".join(sorted(grant.scopes)),
            "server_endpoint": f"{origin}/rest/",
            "status": app.status,
            "user_id": grant.user_id,
        }
        if proof == "code" and not self.code_answer_names_user:
            del body["expires"], body["user_id"]
        return body, grant.user_id

    def _redeem(self, proof: str, value: str, client_id: str) -> Grant:
        if proof == "refresh_token":
            grant = self._refresh_tokens.get(value)
            if grant is None or grant.client_id != client_id:
                raise RestError(400, "invalid_grant", "Invalid refresh token")
            del self._refresh_tokens[value]
            return grant
        grant = self._codes.pop(value, None)
        if grant is None or grant.client_id != client_id:
            raise RestError(400, "invalid_grant", "Invalid authorization code")
        if grant.expires_at <= time.time():
            raise RestError(400, "invalid_grant", "The authorization code has expired")
        return grant

    def _issue(self, grant: Grant) -> tuple[str, str, Grant]:
        access, refresh = secrets.token_hex(16), secrets.token_hex(16)
        live = dataclasses.replace(grant, expires_at=time.time() + self.access_ttl)
        self._access_tokens[access] = live
        self._refresh_tokens[refresh] = dataclasses.replace(grant, expires_at=math.inf)
        return access, refresh, live


def _text_param(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value) or None
