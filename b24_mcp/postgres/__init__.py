"""State that several replicas share through PostgreSQL, used only when `B24_DATABASE_URL` is set.

One module per concern, all over one connection pool (`database`):

- `schema`: the tables, created and upgraded by numbered migrations (`b24-mcp db upgrade`, or the server itself on
  its first use of the database);
- `spent`: spent confirmation tokens, so a token works once across every replica;
- `pacing`: the portal's rate bucket and its operating-time blocks, one per portal for all replicas;
- `grants`: the application's OAuth token pair, refreshed by one replica
  at a time under a row lock, sealed with a key derived from `B24_CONFIRM_SECRET`;
- `journal`: the audit journal as a table;
- `state`: the whole set, as `build_app` assembles it.

Sign-in's people store in this database lives with sign-in (`signin.postgres`), over the same pool.

Nothing here is imported unless `B24_DATABASE_URL` is set: the driver (psycopg 3, the `[postgres]` extra) stays out
of the stdio server's cold start.
"""
