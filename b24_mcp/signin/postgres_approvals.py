"""The approval page's state in the database replicas share (migration 4): `signin.approvals.PageStore` as
`SQLiteApprovals` keeps it, so a person may approve on one replica what another previewed and deletes.

Deciding is a conditional `UPDATE … WHERE state = 'pending'`, a page sign-in taken by `DELETE … RETURNING`: of
concurrent callers exactly one wins. Expiry times are the replicas' clocks, as the confirmation tokens' are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from b24_mcp.deleting.approval import Approval, ApprovalState
from b24_mcp.secure.sealing import digest
from b24_mcp.signin.approvals import MAX_PAGE_SIGNINS, approval_from
from b24_mcp.signin.postgres_pending import _S, PendingSignIns
from b24_mcp.signin.records import StoreFull


class PostgresApprovals:
    """`PageStore` in the shared database, over the people store's connection pool."""

    def __init__(self, store: PendingSignIns, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def open_approval(self, approval_id: str, approval: Approval) -> None:
        now, facts = self._clock(), json.dumps(dict(approval.facts))

        async def work(db: Any) -> None:
            await db.execute(f"DELETE FROM {_S}.signin_approvals WHERE expires_at <= %s", (now,))
            await db.execute(
                f"INSERT INTO {_S}.signin_approvals (id, user_id, facts, state, expires_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (digest(approval_id), approval.user_id, facts, approval.state.value, approval.expires_at),
            )

        await self._store._run(work)

    async def find_approval(self, approval_id: str) -> Approval | None:
        now = self._clock()

        async def work(db: Any) -> Any:
            cursor = await db.execute(
                f"SELECT user_id, facts, state, expires_at FROM {_S}.signin_approvals "
                "WHERE id = %s AND expires_at > %s",
                (digest(approval_id), now),
            )
            return await cursor.fetchone()

        row = await self._store._run(work)
        return None if row is None else approval_from(row)

    async def decide_approval(self, approval_id: str, user_id: int, approve: bool) -> bool:
        now = self._clock()
        state = ApprovalState.APPROVED if approve else ApprovalState.DECLINED

        async def work(db: Any) -> bool:
            cursor = await db.execute(
                f"UPDATE {_S}.signin_approvals SET state = %s "
                "WHERE id = %s AND user_id = %s AND state = 'pending' AND expires_at > %s",
                (state.value, digest(approval_id), user_id, now),
            )
            return bool(cursor.rowcount == 1)

        return await self._store._run(work)

    async def add_page_signin(self, state: str, target: str, expires_at: float) -> None:
        now = self._clock()

        async def work(db: Any) -> None:
            await db.execute(f"DELETE FROM {_S}.signin_page_signins WHERE expires_at <= %s", (now,))
            cursor = await db.execute(f"SELECT count(*) FROM {_S}.signin_page_signins")
            row = await cursor.fetchone()
            if row[0] >= MAX_PAGE_SIGNINS:
                raise StoreFull("page sign-ins")
            await db.execute(
                f"INSERT INTO {_S}.signin_page_signins (state, target, expires_at) VALUES (%s, %s, %s)",
                (digest(state), target, expires_at),
            )

        await self._store._run(work)

    async def take_page_signin(self, state: str) -> str | None:
        now = self._clock()

        async def work(db: Any) -> Any:
            cursor = await db.execute(
                f"DELETE FROM {_S}.signin_page_signins WHERE state = %s RETURNING target, expires_at",
                (digest(state),),
            )
            return await cursor.fetchone()

        row = await self._store._run(work)
        return None if row is None or row[1] <= now else str(row[0])

    async def add_session(self, session: str, user_id: int, expires_at: float) -> None:
        now = self._clock()

        async def work(db: Any) -> None:
            await db.execute(f"DELETE FROM {_S}.signin_page_sessions WHERE expires_at <= %s", (now,))
            await db.execute(
                f"INSERT INTO {_S}.signin_page_sessions (session, user_id, expires_at) VALUES (%s, %s, %s)",
                (digest(session), user_id, expires_at),
            )

        await self._store._run(work)

    async def find_session(self, session: str) -> int | None:
        now = self._clock()

        async def work(db: Any) -> Any:
            cursor = await db.execute(
                f"SELECT user_id FROM {_S}.signin_page_sessions WHERE session = %s AND expires_at > %s",
                (digest(session), now),
            )
            return await cursor.fetchone()

        row = await self._store._run(work)
        return None if row is None else int(row[0])
