"""The signed-in people of a team server: each request's application as its person uses it, and the wiring.

`b24_mcp.app.build_signin_app` builds the application of a sign-in server: the shared parts (one HTTP pool, one rate
limiter for the portal, the confirmation secret and spent tokens, the journal, the guardrails) as `build_app` makes
them, plus `People`. For every authenticated request, `People.app_for` gives the application as the person behind
the bearer token uses it (`App.acting_as`): their own portal client (their Bitrix24 tokens, sharing the pool and the
limiter), confirmation tokens bound to them, their catalog, their name for the journal. Those are built when the
request is authenticated (`SignInProvider.load_access_token`) and kept while the person's sign-in (its version)
stays the same. The people store is the SQLite file under `B24_STATE_DIR`, or, when `B24_DATABASE_URL` is set, the
shared database (`signin.postgres`), so that replicas behind one address serve the same signed-in people.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from b24_mcp.deleting.app import App
from b24_mcp.secure.sealing import Sealer, load_key
from b24_mcp.settings import Settings
from b24_mcp.signin.config import CALLBACK_PATH, CONSENT_PATH, SignInConfig
from b24_mcp.signin.metadata import auth_settings
from b24_mcp.signin.pages import SignInPages
from b24_mcp.signin.person import PersonAuth
from b24_mcp.signin.provider import FloodLimits, PersonAccessToken, SignInProvider
from b24_mcp.signin.records import Grant, Person
from b24_mcp.signin.sqlite import SQLiteStore
from b24_mcp.signin.store import PeopleStore

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken
    from mcp.server.mcpserver import MCPServer

    from b24_mcp.deleting.approval import ApprovalDesk
    from b24_mcp.portal.client import PortalClient
    from b24_mcp.postgres.database import Database
    from b24_mcp.signin.approval_page import ApprovalPage

MAX_CACHED = 4096  # people whose portal client is kept between requests
TOUCH_SECONDS = 60.0


class NotSignedIn(LookupError):  # noqa: N818 (a state, not a failure of ours)
    """A tool call without a signed-in person behind it (the HTTP layer lets none through)."""


class People:
    """Who is signed in, and the application as each of them uses it (see the module docstring)."""

    def __init__(
        self,
        config: SignInConfig,
        store: PeopleStore,
        base: App,
        *,
        clock: Callable[[], float] = time.time,
        limits: FloodLimits | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._base = base
        self._clock = clock
        self._apps: OrderedDict[int, tuple[int, App]] = OrderedDict()  # user id -> (version, their application)
        self._touched: dict[int, float] = {}
        self.provider = SignInProvider(config, store, self._prepare, clock=clock, limits=limits)
        self.pages = SignInPages(config, store, base.portal, self._signed_in, clock=clock)
        self.approval_page: ApprovalPage | None = None  # B24_CONFIRM=page or auto: see `serve_page`

    def __repr__(self) -> str:
        return f"People({self.config!r}, signed_in={len(self._apps)})"

    def app_for(self, access: AccessToken | None) -> App:
        """The application as the person behind `access` uses it; `NotSignedIn` without one."""
        if not isinstance(access, PersonAccessToken):
            raise NotSignedIn("no signed-in person made this request")
        entry = self._apps.get(access.user_id)  # made when the request was authenticated (or a newer sign-in's)
        if entry is None:
            raise NotSignedIn(f"user {access.user_id} has no credential here")
        return entry[1]

    async def _prepare(self, grant: Grant, person: Person) -> bool:
        """Make `app_for` ready for this person's request; False when their Bitrix24 tokens cannot be used."""
        entry = self._apps.get(person.user_id)
        if entry is None or entry[0] != person.version:
            stored = await self.store.bitrix_tokens(person.user_id)
            if stored is None or stored[0] != person.version:
                return False  # revoked meanwhile, or sealed with another key: they sign in again
            version, tokens = stored
            entry = self._apps.get(person.user_id)
            if entry is None or entry[0] != version:  # not made meanwhile by a concurrent request: one per person
                auth = PersonAuth(
                    self.config,
                    user_id=person.user_id,
                    name=person.name,
                    version=version,
                    tokens=tokens,
                    store=self.store,
                )
                entry = (version, self._base.acting_as(auth, user_name=person.name))
                self._apps[person.user_id] = entry
            while len(self._apps) > MAX_CACHED:
                self._apps.popitem(last=False)
        self._apps.move_to_end(person.user_id)
        now = self._clock()
        if now - self._touched.get(person.user_id, float("-inf")) >= TOUCH_SECONDS:
            self._touched[person.user_id] = now
            await self.store.touch(person.user_id)
        return True

    async def _signed_in(self, person: Person) -> None:
        entry = self._apps.get(person.user_id)
        if entry is not None and entry[0] != person.version:
            del self._apps[person.user_id]

    def server_options(self) -> dict[str, Any]:
        """`MCPServer` keyword arguments that make it this server's authorization server and protected resource."""
        return {"auth_server_provider": self.provider, "auth": auth_settings(self.config.issuer)}

    def serve_page(self, page: ApprovalPage) -> None:
        """Serve the approval page (`add_routes`) and end the portal sign-ins it begins."""
        from b24_mcp.signin.approval_page import PAGE_STATE_PREFIX

        self.approval_page = page
        self.pages.page_signed_in = (PAGE_STATE_PREFIX, page.signed_in)

    def add_routes(self, server: MCPServer) -> None:
        """The pages the person's browser sees (the portal's callback, the consent, the approval page), on
        `server`'s HTTP app."""
        server.custom_route(CALLBACK_PATH, methods=["GET"])(self.pages.callback)
        server.custom_route(CONSENT_PATH, methods=["POST"])(self.pages.consent)
        if self.approval_page is not None:
            from b24_mcp.deleting.approval import APPROVAL_PATH

            path = APPROVAL_PATH + "{approval_id}"
            server.custom_route(path, methods=["GET"])(self.approval_page.show)
            server.custom_route(path, methods=["POST"])(self.approval_page.decide)

    async def aclose(self) -> None:
        await self.store.aclose()


def open_store(config: SignInConfig) -> SQLiteStore:
    """The people store under the state directory, with its key file (both created, private, when missing)."""
    return SQLiteStore(config.database, Sealer(load_key(config.key_file)))


def shared_store(settings: Settings, database: Database | None = None) -> PeopleStore:
    """The people store in the shared database (B24_DATABASE_URL), so that every replica serves the same people;
    its secrets sealed with a key derived from B24_CONFIRM_SECRET. `database`: the process's pool when it has one
    already (the composition root's), so that both agree on whether the database is down. Nothing connects before
    the first use."""
    from b24_mcp.postgres.database import Database  # psycopg only now: a lone sign-in server does not load it
    from b24_mcp.secure.keys import people_key
    from b24_mcp.signin.postgres import PostgresPeopleStore

    assert settings.database_url is not None
    assert settings.confirm_secret is not None  # the settings require it with a database
    secret = settings.confirm_secret.get_secret_value().encode()
    return PostgresPeopleStore(
        database or Database(settings.database_url.get_secret_value(), role="people"), people_key(secret)
    )


def open_approvals(config: SignInConfig, store: PeopleStore, portal: PortalClient) -> tuple[ApprovalDesk, ApprovalPage]:
    """The approval page, its state in the people store: the desk that opens approvals (the application's
    `approvals`) and the page people approve on (`People.serve_page`)."""
    from b24_mcp.deleting.approval import ApprovalDesk
    from b24_mcp.signin.approval_page import ApprovalPage
    from b24_mcp.signin.approvals import PageStore, SQLiteApprovals

    if isinstance(store, SQLiteStore):
        page_store: PageStore = SQLiteApprovals(store)
    else:
        from b24_mcp.signin.postgres_approvals import PostgresApprovals
        from b24_mcp.signin.postgres_pending import PendingSignIns

        assert isinstance(store, PendingSignIns)
        page_store = PostgresApprovals(store)
    return ApprovalDesk(page_store, config.issuer), ApprovalPage(config, page_store, portal)
