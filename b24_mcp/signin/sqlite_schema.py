"""The SQLite people store's tables, and the upgrade from the schema before (`signin.sqlite`)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, info TEXT NOT NULL, secret TEXT, created_at REAL NOT NULL, used_at REAL, source TEXT);
CREATE TABLE IF NOT EXISTS authorizations (
    state TEXT PRIMARY KEY, data TEXT NOT NULL, expires_at REAL NOT NULL, source TEXT);
CREATE TABLE IF NOT EXISTS consent_waits (
    consent TEXT PRIMARY KEY, data TEXT NOT NULL, access TEXT NOT NULL, refresh TEXT, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    user_id INTEGER PRIMARY KEY, name TEXT NOT NULL, member_id TEXT NOT NULL, signed_in_at REAL NOT NULL,
    last_used_at REAL, version INTEGER NOT NULL, access TEXT, refresh TEXT);
CREATE TABLE IF NOT EXISTS consents (
    user_id INTEGER NOT NULL, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (user_id, client_id, redirect_uri));
CREATE TABLE IF NOT EXISTS codes (
    code TEXT PRIMARY KEY, data TEXT NOT NULL, user_id INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY, kind TEXT NOT NULL, family TEXT NOT NULL, client_id TEXT NOT NULL,
    user_id INTEGER NOT NULL, scopes TEXT NOT NULL, resource TEXT NOT NULL, expires_at REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS tokens_family ON tokens (family);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user_id);
CREATE INDEX IF NOT EXISTS tokens_expiry ON tokens (expires_at);
CREATE INDEX IF NOT EXISTS clients_source ON clients (source);
CREATE INDEX IF NOT EXISTS authorizations_source ON authorizations (source);
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, facts TEXT NOT NULL, state TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS page_sessions (session TEXT PRIMARY KEY, user_id INTEGER NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS page_signins (state TEXT PRIMARY KEY, target TEXT NOT NULL, expires_at REAL NOT NULL);
"""
# From schema 2: the approval page's tables (`signin.approvals`) are new; CREATE ... IF NOT EXISTS adds them.
# From schema 1: its consents were per client, whatever the redirect URI; they no longer count (the person is asked
# once more), and the rows in flight get their source (none for those already there).
_UPGRADE_FROM_1 = (
    "DROP TABLE consents",
    "ALTER TABLE clients ADD COLUMN source TEXT",
    "ALTER TABLE authorizations ADD COLUMN source TEXT",
)
