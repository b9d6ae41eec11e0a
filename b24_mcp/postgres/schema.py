"""The shared state's tables, in their own PostgreSQL schema `b24mcp`, created and upgraded by numbered migrations.

`MIGRATIONS[n]` takes the schema from version n to n + 1; `b24mcp.schema_version` holds the version reached.
`upgrade` applies the missing ones in one transaction under an advisory lock, so replicas starting together (or a
replica and `b24-mcp db upgrade`) upgrade once and the others wait and find it done. The server upgrades on its
first use of the database (`ensure_schema`); `b24-mcp db upgrade` does the same ahead of a roll-out, e.g. with a
role that may create tables while the servers' role may not. A schema newer than this version of b24-mcp knows is
never touched: the server refuses to use it (`SchemaTooNewError`) rather than guess.

The tables:

- `spent_tokens (nonce PK, expires_at, spender, spent_at)`: confirmation tokens used; `spender` names the spending
  call, so a spend retried after its answer was lost is recognised as its own;
- `rate_buckets (portal PK, level, at)`: the portal's leaky bucket as all replicas fill it, on the database clock;
- `method_blocks (credential, method, until)`: methods the portal blocked (`OPERATION_TIME_LIMIT`) until a time
  (both unlogged: a request costs no disk flush, and a crash only empties them);
- `grants (portal, holder, access_token, refresh_token, user_id, access_expires_at, generation, updated_at)`:
  OAuth token pairs, sealed (see `grants`); `holder` is `app:<client_id>` for the server's own grant;
- `journal (seq, ts, event, attempt, portal, entity_type_id, item_id, replica, entry)`: the audit journal, `entry`
  being the same JSON object as a line of the journal file; one row per (attempt, event).
- `signin_*` (migration 2): sign-in's people store when replicas share it (`people`): the pinned portal
  (`signin_meta`), registered clients, sign-ins in flight, consents, authorization codes and MCP tokens (as
  digests), and each person's Bitrix24 tokens (sealed), as `signin.store.SQLiteStore` keeps them in one file;
  their times are Unix seconds (`double precision`) on the database's clock, so that replicas agree on expiry.
  Migration 3: consents per (person, client, exact redirect URI), those per client dropped; the source address of
  registrations and sign-ins in flight, for each address's share. Migration 4: the approval page's approvals,
  browser sessions and page sign-ins (`signin_approvals`, `signin_page_sessions`, `signin_page_signins`).
"""

from __future__ import annotations

from typing import Any

SCHEMA = "b24mcp"
# pg_advisory_xact_lock key for migrations: "b24mcp" in ASCII.
_MIGRATION_LOCK = 0x6232346D6370

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
        f"""CREATE TABLE {SCHEMA}.schema_version (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            version integer NOT NULL,
            upgraded_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )""",
        f"""CREATE TABLE {SCHEMA}.spent_tokens (
            nonce text PRIMARY KEY,
            expires_at bigint NOT NULL,
            spender text NOT NULL,
            spent_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )""",
        f"CREATE INDEX spent_tokens_by_expiry ON {SCHEMA}.spent_tokens (expires_at)",
        # Unlogged: no WAL, so no disk flush per request; a crash empties them, which costs nothing (the bucket
        # refills from empty, the portal says again what it blocks).
        f"""CREATE UNLOGGED TABLE {SCHEMA}.rate_buckets (
            portal text PRIMARY KEY,
            level double precision NOT NULL,
            at timestamptz NOT NULL
        )""",
        f"""CREATE UNLOGGED TABLE {SCHEMA}.method_blocks (
            credential text NOT NULL,
            method text NOT NULL,
            until timestamptz NOT NULL,
            PRIMARY KEY (credential, method)
        )""",
        f"""CREATE TABLE {SCHEMA}.grants (
            portal text NOT NULL,
            holder text NOT NULL,
            access_token text NOT NULL,
            refresh_token text,
            user_id bigint,
            access_expires_at timestamptz,
            generation bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (portal, holder)
        )""",
        f"""CREATE TABLE {SCHEMA}.journal (
            seq bigserial PRIMARY KEY,
            ts timestamptz NOT NULL DEFAULT clock_timestamp(),
            event text NOT NULL CHECK (event IN ('intent', 'deleted', 'error', 'cancelled')),
            attempt text NOT NULL,
            portal text NOT NULL,
            entity_type_id bigint NOT NULL,
            item_id bigint NOT NULL,
            replica text NOT NULL,
            entry json NOT NULL,
            UNIQUE (attempt, event)
        )""",
        f"CREATE INDEX journal_by_item ON {SCHEMA}.journal (portal, entity_type_id, item_id)",
    ),
    (
        # Sign-in's people store (`signin.postgres`). Times are Unix seconds on the database's clock (stamped as
        # `extract(epoch FROM now())`; rows written by earlier versions have the writing replica's clock, in the
        # same unit, so no migration changed them).
        f"CREATE TABLE {SCHEMA}.signin_meta (name text PRIMARY KEY, value text NOT NULL)",
        f"""CREATE TABLE {SCHEMA}.signin_clients (
            client_id text PRIMARY KEY,
            info text NOT NULL,
            secret text,
            created_at double precision NOT NULL,
            used_at double precision
        )""",
        f"""CREATE TABLE {SCHEMA}.signin_authorizations (
            state text PRIMARY KEY,
            data text NOT NULL,
            expires_at double precision NOT NULL
        )""",
        f"""CREATE TABLE {SCHEMA}.signin_consent_waits (
            consent text PRIMARY KEY,
            data text NOT NULL,
            access text NOT NULL,
            refresh text,
            expires_at double precision NOT NULL
        )""",
        f"""CREATE TABLE {SCHEMA}.signin_people (
            user_id bigint PRIMARY KEY,
            name text NOT NULL,
            member_id text NOT NULL,
            signed_in_at double precision NOT NULL,
            last_used_at double precision,
            version bigint NOT NULL,
            access text,
            refresh text
        )""",
        f"""CREATE TABLE {SCHEMA}.signin_consents (
            user_id bigint NOT NULL,
            client_id text NOT NULL,
            at double precision NOT NULL,
            PRIMARY KEY (user_id, client_id)
        )""",
        f"""CREATE TABLE {SCHEMA}.signin_codes (
            code text PRIMARY KEY,
            data text NOT NULL,
            user_id bigint NOT NULL,
            used boolean NOT NULL DEFAULT false,
            expires_at double precision NOT NULL
        )""",
        f"""CREATE TABLE {SCHEMA}.signin_tokens (
            token text PRIMARY KEY,
            kind text NOT NULL CHECK (kind IN ('access', 'refresh')),
            family text NOT NULL,
            client_id text NOT NULL,
            user_id bigint NOT NULL,
            scopes text NOT NULL,
            resource text NOT NULL,
            expires_at double precision NOT NULL,
            used boolean NOT NULL DEFAULT false
        )""",
        f"CREATE INDEX signin_tokens_by_family ON {SCHEMA}.signin_tokens (family)",
        f"CREATE INDEX signin_tokens_by_user ON {SCHEMA}.signin_tokens (user_id)",
        f"CREATE INDEX signin_tokens_by_expiry ON {SCHEMA}.signin_tokens (expires_at)",
    ),
    (
        # A consent is to a client at one exact redirect URI. Consents per client (migration 2) no longer count:
        # each person is asked once more. Registrations and sign-ins in flight know their source address, for
        # each address's share (`signin.postgres`).
        f"DROP TABLE {SCHEMA}.signin_consents",
        f"""CREATE TABLE {SCHEMA}.signin_consents (
            user_id bigint NOT NULL,
            client_id text NOT NULL,
            redirect_uri text NOT NULL,
            at double precision NOT NULL,
            PRIMARY KEY (user_id, client_id, redirect_uri)
        )""",
        f"ALTER TABLE {SCHEMA}.signin_clients ADD COLUMN source text",
        f"CREATE INDEX signin_clients_by_source ON {SCHEMA}.signin_clients (source)",
        f"ALTER TABLE {SCHEMA}.signin_authorizations ADD COLUMN source text",
        f"CREATE INDEX signin_authorizations_by_source ON {SCHEMA}.signin_authorizations (source)",
    ),
    (
        # The approval page (B24_CONFIRM=page, `signin.postgres_approvals`): approvals, its browser sessions and
        # the sign-ins begun from it; ids as digests, expiry times on the replicas' clock (the tokens' own).
        f"""CREATE TABLE {SCHEMA}.signin_approvals (
            id text PRIMARY KEY,
            user_id bigint NOT NULL,
            facts text NOT NULL,
            state text NOT NULL,
            expires_at double precision NOT NULL
        )""",
        f"CREATE INDEX signin_approvals_by_expiry ON {SCHEMA}.signin_approvals (expires_at)",
        f"""CREATE TABLE {SCHEMA}.signin_page_sessions (
            session text PRIMARY KEY,
            user_id bigint NOT NULL,
            expires_at double precision NOT NULL
        )""",
        f"""CREATE TABLE {SCHEMA}.signin_page_signins (
            state text PRIMARY KEY,
            target text NOT NULL,
            expires_at double precision NOT NULL
        )""",
    ),
)
LATEST = len(MIGRATIONS)


class SchemaTooNewError(Exception):
    """The database's schema was upgraded by a newer b24-mcp than this one."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"its schema is version {found}, newer than this b24-mcp knows ({LATEST}); upgrade b24-mcp on every replica"
        )
        self.found = found


async def schema_version(connection: Any) -> int:
    """The schema version of the database (0: no b24-mcp schema yet)."""
    # A scan of the catalog, not to_regclass(): after waiting for the migration lock, the name cache may not yet
    # know of the table another replica just created, while this query's snapshot does.
    cursor = await connection.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n "
        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = 'schema_version')",
        (SCHEMA,),
    )
    row = await cursor.fetchone()
    if row is None or not row[0]:
        return 0
    cursor = await connection.execute(f"SELECT version FROM {SCHEMA}.schema_version")
    row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0


async def upgrade(connection: Any) -> tuple[int, int]:
    """Apply the missing migrations in one transaction; the version before and after. `SchemaTooNewError` when the
    database is ahead of this code."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        before = await schema_version(connection)
        if before > LATEST:
            raise SchemaTooNewError(before)
        for statements in MIGRATIONS[before:]:
            for statement in statements:
                await connection.execute(statement)
        if before < LATEST:
            await connection.execute(
                f"INSERT INTO {SCHEMA}.schema_version (version) VALUES (%s) "
                "ON CONFLICT (singleton) DO UPDATE SET version = excluded.version, upgraded_at = clock_timestamp()",
                (LATEST,),
            )
    return before, LATEST


async def ensure_schema(connection: Any) -> None:
    """Make the schema current: nothing when it is, the missing migrations when it is older."""
    found = await schema_version(connection)
    if found > LATEST:
        raise SchemaTooNewError(found)
    if found < LATEST:
        await upgrade(connection)
