"""Where the approval page keeps its state, in the people store: approvals, browser sessions, page sign-ins.

`PageStore` is what `approval_page` uses; `SQLiteApprovals` keeps it in the SQLite people store's file (its
tables are in `sqlite._SCHEMA`, schema 3), `postgres_approvals.PostgresApprovals` in the database replicas share
(migration 4), so the page and the deletion may be served by different replicas. Ids, session ids and sign-in
states are kept only as SHA-256 digests; every row expires (an approval with its confirmation token, a session
after `SESSION_SECONDS`, a page sign-in after `SIGN_IN_SECONDS`) and expired rows go whenever one of their kind is
written. Page sign-ins are begun only for an approval that exists, and capped at `MAX_PAGE_SIGNINS`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Protocol

from b24_mcp.deleting.approval import Approval, ApprovalState, ApprovalStore
from b24_mcp.secure.sealing import digest
from b24_mcp.signin.records import StoreFull
from b24_mcp.signin.sqlite import SQLiteStore

SESSION_SECONDS = 3600  # a browser session with the approval page
SIGN_IN_SECONDS = 900  # from the page to the portal's sign-in and back
MAX_PAGE_SIGNINS = 10_000


class PageStore(ApprovalStore, Protocol):
    """Approvals, and the browser sessions of the page that decides them."""

    async def add_page_signin(self, state: str, target: str, expires_at: float) -> None:
        """Remember a sign-in sent to the portal from the page at `target`; `StoreFull` past the cap."""
        ...

    async def take_page_signin(self, state: str) -> str | None:
        """The page a page sign-in began at, once, unexpired."""
        ...

    async def add_session(self, session: str, user_id: int, expires_at: float) -> None: ...

    async def find_session(self, session: str) -> int | None:
        """The person of an unexpired browser session."""
        ...


def approval_from(row: tuple[int, str, str, float]) -> Approval:
    return Approval(int(row[0]), json.loads(row[1]), ApprovalState(row[2]), float(row[3]))


class SQLiteApprovals:
    """`PageStore` in the SQLite people store's file (one process)."""

    def __init__(self, store: SQLiteStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def open_approval(self, approval_id: str, approval: Approval) -> None:
        now, facts = self._clock(), json.dumps(dict(approval.facts))

        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM approvals WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT INTO approvals (id, user_id, facts, state, expires_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO NOTHING",
                (digest(approval_id), approval.user_id, facts, approval.state.value, approval.expires_at),
            )

        await self._store._run(work)

    async def find_approval(self, approval_id: str) -> Approval | None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> tuple[int, str, str, float] | None:
            return db.execute(  # type: ignore[no-any-return]
                "SELECT user_id, facts, state, expires_at FROM approvals WHERE id = ? AND expires_at > ?",
                (digest(approval_id), now),
            ).fetchone()

        row = await self._store._run(work)
        return None if row is None else approval_from(row)

    async def decide_approval(self, approval_id: str, user_id: int, approve: bool) -> bool:
        now = self._clock()
        state = ApprovalState.APPROVED if approve else ApprovalState.DECLINED

        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE approvals SET state = ? WHERE id = ? AND user_id = ? AND state = 'pending' AND expires_at > ?",
                (state.value, digest(approval_id), user_id, now),
            )
            return cursor.rowcount == 1

        return await self._store._run(work)

    async def add_page_signin(self, state: str, target: str, expires_at: float) -> None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM page_signins WHERE expires_at <= ?", (now,))
            if db.execute("SELECT count(*) FROM page_signins").fetchone()[0] >= MAX_PAGE_SIGNINS:
                raise StoreFull("page sign-ins")
            db.execute(
                "INSERT INTO page_signins (state, target, expires_at) VALUES (?, ?, ?)",
                (digest(state), target, expires_at),
            )

        await self._store._run(work)

    async def take_page_signin(self, state: str) -> str | None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "DELETE FROM page_signins WHERE state = ? RETURNING target, expires_at", (digest(state),)
            ).fetchone()
            return None if row is None or row[1] <= now else str(row[0])

        return await self._store._run(work)

    async def add_session(self, session: str, user_id: int, expires_at: float) -> None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM page_sessions WHERE expires_at <= ?", (now,))
            db.execute(
                "INSERT INTO page_sessions (session, user_id, expires_at) VALUES (?, ?, ?)",
                (digest(session), user_id, expires_at),
            )

        await self._store._run(work)

    async def find_session(self, session: str) -> int | None:
        now = self._clock()

        def work(db: sqlite3.Connection) -> int | None:
            row = db.execute(
                "SELECT user_id FROM page_sessions WHERE session = ? AND expires_at > ?", (digest(session), now)
            ).fetchone()
            return None if row is None else int(row[0])

        return await self._store._run(work)
