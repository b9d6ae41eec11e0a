"""Sign-in: on a team server, each person signs in with their own Bitrix24 account and acts with their own rights.

Enabled by `B24_PUBLIC_URL` (with `B24_PORTAL_URL`, `B24_CLIENT_ID`, `B24_CLIENT_SECRET`), HTTP transport only.
This server is then the MCP clients' OAuth authorization server (the MCP authorization spec: protected-resource
and authorization-server metadata, dynamic client registration, PKCE S256), in front of the portal's OAuth, which
has neither PKCE nor client registration:

    MCP client --/authorize--> b24-mcp --/oauth/authorize/--> portal --/oauth/callback?code--> b24-mcp
    b24-mcp --grant_type=authorization_code--> B24_OAUTH_URL: the person's Bitrix24 tokens, kept here
    b24-mcp --(the person's consent to this client)--> client redirect_uri?code&state&iss
    MCP client --/token (code + PKCE verifier)--> b24-mcp: its own access and refresh tokens, bound to the person

Bitrix24 tokens never go to a client; a client's token never goes to the portal. Every tool call runs as the
person behind the bearer token (`People.app_for`), with their Bitrix24 tokens, refreshed on expiry.

Modules: `config` (the settings of sign-in), `records` (a person, their tokens, a grant), `store` (the people
store protocol), `codec` (records to stored text), `sqlite` (+ `sqlite_schema`) and `postgres` (+
`postgres_pending`) (the stores), `person` (a person's Bitrix24 credential), `bitrix` (the code exchange and the
profile), `provider` (the SDK's authorization-server provider), `pages` (the callback and consent pages),
`sources` (a request's source address, `B24_TRUSTED_PROXIES`), `guards` (each address's share, the resource at
`/token`), `metadata`, `people` (the per-person application). The key file and sealing are
`b24_mcp.secure.sealing`; `b24-mcp people` is `commands.people`.
Nothing here is imported unless sign-in is enabled or `b24-mcp people` runs.
"""
