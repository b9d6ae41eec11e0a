"""The pages a person's browser sees: the portal's callback, and the consent to an MCP client.

`GET /oauth/callback` (the Bitrix24 application's redirect URI) takes back the sign-in begun at `/authorize`: its
`state` must be one this server sent, unexpired and unused; the portal's `code` is exchanged at once (it lasts
30 s). The first time a person signs in through a given MCP client to a given redirect URI, they are asked whether
to allow it (`POST /oauth/consent`): a client registered by anyone could otherwise have a signed-in person's portal
session send a code to the client's own redirect URI without them noticing (the "confused deputy" of an OAuth proxy).
Their answer is remembered per person, client and exact redirect URI (a client may register several; one allowed is
not all of them); `b24-mcp people revoke` forgets it. The page names the whole host the code goes to, never cut
short, its registrable domain (taken as the last two labels) in bold; the client's name is shown as what it calls
itself, since anyone registering a client chooses it.

Every parameter is hostile: lengths are capped, the `state` and consent ids are single-use 256-bit values stored
only as digests, the consent form is accepted only from this server's own origin, and the pages can be neither
framed nor cached, nor leak their address to another site. Nothing a client or the portal sent is shown unescaped.

`StoreOutage` is how every sign-in endpoint answers while the shared database is down (`B24_DATABASE_URL`): the SDK's
`/authorize`, `/token`, `/register`, `/revoke`, these pages, and the bearer-token lookup of every MCP request. None
of them can decide without the store, and none may guess: a failure taken for "unknown token" would make clients
throw good tokens away and sign people in again, one taken for success would let a request through unchecked. So
the store's `DatabaseUnavailableError` goes up untouched, and this one middleware answers it with 503 and
`Retry-After` (an OAuth error in JSON, or a short page where a browser is), logs one warning naming the failure,
and leaves the request as undone: the same code, state or token works once the database is back.
"""

from __future__ import annotations

import html
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.provider import construct_redirect_uri
from mcp.server.auth.routes import AUTHORIZATION_PATH
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from b24_mcp.portal.client import PortalClient
from b24_mcp.secure.sealing import new_token
from b24_mcp.signin.bitrix import SignInFailed, sign_in
from b24_mcp.signin.config import CALLBACK_PATH, CONSENT_PATH, SignInConfig
from b24_mcp.signin.provider import CODE_PREFIX, CODE_SECONDS
from b24_mcp.signin.records import (
    Authorization,
    AwaitingConsent,
    ForeignPortalError,
    Grant,
    IssuedCode,
    Person,
    SignedIn,
)
from b24_mcp.signin.store import PeopleStore
from b24_mcp.text import for_display

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

CONSENT_SECONDS = 600
MAX_PARAM = 2048
MAX_FORM_BYTES = 4096
RETRY_AFTER_SECONDS = 5  # the database's pool reconnects in the background; a request then tries it afresh
BROWSER_PATHS = frozenset({AUTHORIZATION_PATH, CALLBACK_PATH, CONSENT_PATH})  # where a person's browser is sent
UNAVAILABLE = "The sign-in store is temporarily unavailable; try again in a few seconds."
_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # No form-action: after the consent, the browser goes on to the client's own redirect URI.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;line-height:1.5}"
    "button{font-size:1rem;padding:.5rem 1.25rem;margin-right:.75rem}.muted{color:#555}"
    ".to{font-family:ui-monospace,monospace;overflow-wrap:anywhere;word-break:break-all}"
)


def _page(status: int, title: str, body: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    content = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head>'
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(content, status_code=status, headers=_HEADERS | (headers or {}))


def _text(value: str) -> str:
    """Text from outside, as one escaped line."""
    return html.escape(for_display(value, 120).replace("\\", ""), quote=True)


def _param(values: dict[str, str], name: str) -> str | None:
    value = values.get(name)
    if value is None or not value or len(value) > MAX_PARAM or not value.isprintable():
        return None
    return value


class SignInPages:
    """The callback and consent endpoints (Starlette handlers) of the sign-in.

    `portal` is the application's client of the portal (its pool and limits), `signed_in(person)` is told of every
    completed sign-in (so a cached credential of an older sign-in is dropped).
    """

    def __init__(
        self,
        config: SignInConfig,
        store: PeopleStore,
        portal: PortalClient,
        signed_in: Callable[[Person], Awaitable[None]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._store = store
        self._portal = portal
        self._signed_in = signed_in
        self._clock = clock
        # The end of a portal sign-in begun from the approval page (`approval_page`), told by its state's prefix.
        self.page_signed_in: tuple[str, Callable[[Request, str], Awaitable[Response]]] | None = None

    async def callback(self, request: Request) -> Response:
        """`GET /oauth/callback?code&state&domain&member_id&scope&server_domain` from the portal."""
        query = dict(request.query_params)
        state = _param(query, "state")
        if state is not None and self.page_signed_in is not None and state.startswith(self.page_signed_in[0]):
            return await self.page_signed_in[1](request, state)
        authorization = await self._store.take_authorization(state) if state is not None else None
        if authorization is None:
            return _page(
                400,
                "This sign-in has expired",
                "<p>This sign-in link has expired or was already used. Start again from your MCP client.</p>",
            )
        if "error" in query:
            reason = _param(query, "error") or "refused"
            return self._to_client(authorization, error="access_denied", description=f"The portal said: {reason}"[:200])
        code = _param(query, "code")
        if code is None:
            return self._to_client(authorization, error="server_error", description="The portal sent no code.")
        try:
            person = await sign_in(self._portal, self._config, code)
        except SignInFailed as failed:
            return self._to_client(authorization, error=failed.error, description=failed.description)
        if await self._store.has_consented(person.user_id, authorization.client_id, authorization.redirect_uri):
            return await self._finish(authorization, person)
        consent_id = new_token("")
        waiting = AwaitingConsent(authorization, person, self._clock() + CONSENT_SECONDS)
        await self._store.await_consent(consent_id, waiting)
        return await self._consent_page(authorization, person, consent_id)

    async def consent(self, request: Request) -> Response:
        """`POST /oauth/consent` with `consent` (the id in the page) and `decision` (`allow` or `deny`)."""
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != self._config.issuer:
            return _page(403, "Not allowed", "<p>This form can only be sent from this server's own page.</p>")
        form = await _read_form(request)
        if form is None:
            return _page(413, "Too large", "<p>This is not an answer to a consent page.</p>")
        consent_id = _param(form, "consent")
        waiting = await self._store.take_consent(consent_id) if consent_id is not None else None
        if waiting is None:
            return _page(
                400,
                "This sign-in has expired",
                "<p>This page has expired or was already answered. Start again from your MCP client.</p>",
            )
        if form.get("decision") != "allow":
            logger.info("User %d did not allow an MCP client", waiting.person.user_id)
            return self._to_client(
                waiting.authorization, error="access_denied", description="The person did not allow this client."
            )
        return await self._finish(waiting.authorization, waiting.person)

    async def _finish(self, authorization: Authorization, signed: SignedIn) -> Response:
        """Keep the person's tokens, issue the client's authorization code, and send the browser back to it."""
        try:
            person = await self._store.sign_in(signed, authorization.client_id, authorization.redirect_uri)
        except ForeignPortalError:
            logger.warning("Refused a sign-in from another portal")
            return self._to_client(
                authorization,
                error="access_denied",
                description=f"You signed in to another Bitrix24 portal; this server serves {self._config.portal_host}.",
            )
        await self._signed_in(person)
        code = new_token(CODE_PREFIX)
        grant = Grant(
            client_id=authorization.client_id,
            user_id=person.user_id,
            scopes=authorization.scopes,
            resource=authorization.resource,
            family=new_token(""),
            expires_at=self._clock() + CODE_SECONDS,
        )
        issued = IssuedCode(
            grant, authorization.code_challenge, authorization.redirect_uri, authorization.redirect_uri_explicit
        )
        await self._store.add_code(code, issued)
        logger.info("User %d signed in", person.user_id)
        return self._to_client(authorization, code=code)

    def _to_client(
        self, authorization: Authorization, *, code: str | None = None, error: str | None = None, description: str = ""
    ) -> Response:
        """302 to the client's redirect URI with the code, or an error (RFC 6749 §4.1.2), its state, and `iss`."""
        if code is not None:
            params = {"code": code}
        else:
            params = {"error": error or "server_error", "error_description": description}
        target = construct_redirect_uri(
            authorization.redirect_uri, **params, state=authorization.state, iss=self._config.issuer
        )
        return RedirectResponse(target, status_code=302, headers=_HEADERS)

    async def _consent_page(self, authorization: Authorization, person: SignedIn, consent_id: str) -> Response:
        client = await self._store.get_client(authorization.client_id)
        name = client.client_name if client is not None else None
        claim = f"A client that calls itself <strong>«{_text(name)}»</strong>" if name else "A client without a name"
        body = (
            f"<p>{claim} asks to use this b24-mcp server as "
            f"<strong>{_text(person.name)}</strong> (Bitrix24 user {person.user_id}) on "
            f"<strong>{_text(self._config.portal_host)}</strong>.</p>"
            "<p>It will preview and delete CRM items with your permissions on the portal. Deletions are confirmed "
            "as this server is set up to confirm them, and every one is journaled under your name.</p>"
            f"<p>If you allow it, your browser takes a code that lets it act as you to {destination(authorization)}"
            '</p><p class="muted">Allow only a client you have just started signing in from, and only if that is '
            "where it should go.</p>"
            f'<form method="post" action="{html.escape(self._config.issuer + CONSENT_PATH)}">'
            f'<input type="hidden" name="consent" value="{html.escape(consent_id)}">'
            '<button type="submit" name="decision" value="allow">Allow</button>'
            '<button type="submit" name="decision" value="deny">Deny</button></form>'
        )
        return _page(200, "Allow this MCP client?", body)


def destination(authorization: Authorization) -> str:
    """Where the code goes, as HTML: the whole host (never cut short), its registrable domain in bold."""
    parts = urlsplit(authorization.redirect_uri)
    scheme = html.escape(parts.scheme)
    if parts.scheme not in ("http", "https"):
        where = f' (<span class="to">{html.escape(parts.netloc)}</span>)' if parts.netloc else ""
        return f"the application on your computer that opens <strong>{scheme}:</strong> links{where}."
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    labels = host.rstrip(".").split(".")
    if ":" in host or host.replace(".", "").isdigit() or len(labels) < 2:  # an address, or a single name
        shown = f"<strong>{html.escape(f'[{host}]' if ':' in host else host)}</strong>"
    else:  # the last two labels: a public-suffix list would tell `co.uk`, at the cost of a dependency
        shown = html.escape(".".join(labels[:-2]) + "." if len(labels) > 2 else "")
        shown += f"<strong>{html.escape('.'.join(labels[-2:]))}</strong>"
    loopback = " (this computer)" if host in ("localhost", "127.0.0.1", "::1") else ""
    return f'<span class="to">{scheme}://{shown}{html.escape(port)}</span>{loopback}.'


async def _read_form(request: Request) -> dict[str, str] | None:
    """A small urlencoded form, or None when the body is larger than `MAX_FORM_BYTES`."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return {}
    try:
        return dict(parse_qsl(text, keep_blank_values=False, max_num_fields=10))
    except ValueError:
        return {}


# ------------------------------------------------------------------------------------- the store is unavailable


def store_outage(exc: BaseException) -> str | None:
    """Why the shared database failed the people store, when that is what `exc` is; else None.

    The database module is looked up, not imported: only `B24_DATABASE_URL` loads it (and psycopg), and without it
    no such failure can happen."""
    database = sys.modules.get("b24_mcp.postgres.database")
    if database is not None and isinstance(exc, database.DatabaseUnavailableError):
        return str(exc)  # the kind of failure, in one line; never the URL or the password
    return None


def _not_an_outage(record: logging.LogRecord) -> bool:
    """A log filter: drops the SDK's traceback of an outage (`StoreOutage` logs one line for it instead)."""
    return record.exc_info is None or store_outage(record.exc_info[1] or Exception()) is None


class StoreOutage:
    """ASGI middleware: a request the people store failed because the shared database is down gets 503 (see the
    module docstring).

    It must sit inside Starlette's `ServerErrorMiddleware`, which would otherwise answer 500 first, and outside
    the SDK's `AuthenticationMiddleware`, where an MCP request's bearer token is looked up. The SDK's `/authorize`
    catches every exception itself, logs its traceback and tries the store again to answer: that second failure
    comes here, and the traceback is filtered out of its log.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        logging.getLogger(AuthorizationHandler.__module__).addFilter(_not_an_outage)  # once: the same filter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            reason = store_outage(exc)
            if reason is None or started:
                raise
            logger.warning(
                "Answered 503 to %s %s: the people store is unavailable (%s)", scope["method"], scope["path"], reason
            )
            await unavailable(scope["path"])(scope, receive, send)


def unavailable(path: str) -> Response:
    """The 503 of `path` while the people store is unavailable: a short page where a person's browser is sent,
    elsewhere an OAuth error (RFC 6749's `temporarily_unavailable`) in JSON."""
    return try_later(path, 503, UNAVAILABLE, RETRY_AFTER_SECONDS)


def try_later(path: str, status: int, description: str, retry_after: int) -> Response:
    """`status` with `Retry-After`: a short page where a person's browser is sent (`path`), elsewhere an OAuth error
    (`temporarily_unavailable`) in JSON."""
    retry = {"Retry-After": str(retry_after)}
    if path in BROWSER_PATHS or path.startswith("/approve/"):  # the approval page (`approval_page`) too
        return _page(status, "Try again in a moment", f"<p>{html.escape(description)}</p>", retry)
    body = {"error": "temporarily_unavailable", "error_description": description}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"} | retry)
