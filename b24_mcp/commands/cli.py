"""The `b24-mcp` command: serve over stdio (against a portal or the sandbox), run the demo, read the journal.

Imports are deferred to the branch that needs them: the stdio server's cold start is a measured figure.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence
from typing import Any

from b24_mcp import __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="b24-mcp",
        description="MCP server that previews and deletes Bitrix24 CRM items (crm.item.delete). "
        "Without a command it serves MCP over stdio.",
    )
    parser.add_argument("--version", action="version", version=f"b24-mcp {__version__}")
    env_file_help = "read B24_* settings from this env file too (no .env is read unless named; or B24_ENV_FILE)"
    parser.add_argument("--env-file", metavar="PATH", help=env_file_help)
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="serve against a built-in emulated portal with demo data (no credentials, nothing real is touched)",
    )
    parser.add_argument(
        "--transport", choices=["stdio", "http"], default="stdio", help="stdio (default) or streamable HTTP"
    )
    parser.add_argument("--host", default="127.0.0.1", help="HTTP: the address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP: the port (default 8000)")
    parser.add_argument(
        "--stateless",
        action="store_true",
        help="HTTP: no sessions, for several replicas behind a load balancer (share B24_CONFIRM_SECRET)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="a scripted walk-through against the sandbox, printed as a transcript")
    check = commands.add_parser("check", help="check the configuration and the portal: could a deletion work?")
    check.add_argument("--sandbox", action="store_true", help="check against the built-in sandbox portal")
    check.add_argument("--env-file", metavar="PATH", default=argparse.SUPPRESS, help=env_file_help)
    journal = commands.add_parser("journal", help="show the audit journal's recent entries (newest last)")
    journal.add_argument("--json", action="store_true", help="print the raw JSON lines")
    journal.add_argument("-n", "--limit", type=int, default=20, help="how many entries (default 20)")
    journal.add_argument("--env-file", metavar="PATH", default=argparse.SUPPRESS, help=env_file_help)
    database = commands.add_parser("db", help="the database replicas share (B24_DATABASE_URL)")
    database.add_argument("action", choices=["upgrade"], help="upgrade: create or upgrade its schema now")
    database.add_argument("--env-file", metavar="PATH", default=argparse.SUPPRESS, help=env_file_help)
    people = commands.add_parser(
        "people", help="sign-in (B24_PUBLIC_URL): list who has signed in, or revoke a person's access at once"
    )
    people.add_argument("action", nargs="?", choices=["list", "revoke"], default="list", help="list (default), revoke")
    people.add_argument("user_id", nargs="?", type=int, metavar="USER_ID", help="revoke: the person's Bitrix24 user id")
    people.add_argument("--env-file", metavar="PATH", default=argparse.SUPPRESS, help=env_file_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `b24-mcp` console script."""
    # Start-up creates many long-lived objects (the SDK's models and schemas): collecting garbage among them is
    # wasted work. Collection resumes before serving, with everything built so far frozen out of its way.
    gc.disable()
    try:
        return _main(argv)
    finally:
        gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    from b24_mcp.settings import SettingsError, load_settings

    try:
        if args.command == "demo":
            from b24_mcp.commands.demo import run_demo

            return run_demo()
        settings = load_settings(env_file=args.env_file)
        if args.command == "check":
            return _check(settings, sandbox=args.sandbox)
        if args.command == "journal":
            if settings.database_url is not None:
                from b24_mcp.postgres.journal import print_table_journal

                url = settings.database_url.get_secret_value()
                return print_table_journal(url, limit=args.limit, as_json=args.json)
            from b24_mcp.journal.reader import print_journal

            return print_journal(settings.audit_log, limit=args.limit, as_json=args.json)
        if args.command == "db":
            if settings.database_url is None:
                print("b24-mcp: B24_DATABASE_URL is not set: there is no shared database", file=sys.stderr)
                return 2
            from b24_mcp.commands.db import upgrade_command

            return upgrade_command(settings.database_url.get_secret_value())
        if args.command == "people":
            from b24_mcp.commands.people import people_command

            return people_command(settings, args.action, args.user_id)
        return _serve(settings, args)
    except SettingsError as exc:
        for line in exc.lines:
            print(f"b24-mcp: {line}", file=sys.stderr)
        return 2


def _for_sandbox(settings: Any) -> Any:
    """The sandbox keeps its own journal unless B24_AUDIT_LOG says otherwise."""
    if "audit_log" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"audit_log": settings.audit_log.with_name("sandbox-audit.jsonl")})


def _check(settings: Any, *, sandbox: bool) -> int:
    import anyio

    from b24_mcp.commands.check import diagnose, passed

    if settings.public_url is not None and not sandbox:  # sign-in: each person's credentials come at sign-in
        from b24_mcp.commands.people import check_signin

        return check_signin(settings)
    if sandbox:
        from b24_mcp.sandbox.serve import sandbox_transport, sandbox_webhook

        findings = anyio.run(diagnose, _for_sandbox(settings), sandbox_webhook(), sandbox_transport())
    else:
        findings = anyio.run(diagnose, settings, None)
    for finding in findings:
        print(finding)
    return 0 if passed(findings) else 1


def _serve(settings: Any, args: argparse.Namespace) -> int:
    from b24_mcp.logs import configure

    configure(settings.log_level, settings.log_format)
    from b24_mcp.app import LazyTransport, build_app
    from b24_mcp.serving.tools import build_server
    from b24_mcp.settings import SettingsError

    options: dict[str, Any] = {}
    signing_in = settings.public_url is not None
    if signing_in and args.sandbox:
        raise SettingsError(["B24_PUBLIC_URL is set: people sign in to a real portal; unset it to serve the sandbox"])
    if signing_in and args.transport != "http":
        raise SettingsError(["B24_PUBLIC_URL is set: people sign in over HTTP only; serve with --transport http"])
    if args.transport == "http":
        from b24_mcp.serving.transport import http_options

        options = http_options(settings, args.host, args.port)
    people = None
    if args.sandbox:
        from b24_mcp.sandbox.link import sandbox_http, sandbox_webhook

        settings = _for_sandbox(settings)
        app = build_app(settings, sandbox_webhook(), http_transport=LazyTransport(sandbox_http))
    elif signing_in:  # each person signs in; this server is their MCP clients' authorization server
        from b24_mcp.signin.people import build_signin_app

        app, people = build_signin_app(settings)
        options |= people.server_options()
    else:
        app = build_app(settings)
    server = build_server(app, server_options=options)
    if people is not None:
        people.add_routes(server)
    if settings.confirm == "none":
        logging.getLogger("b24_mcp").warning(
            "B24_CONFIRM=none: deletions are NOT confirmed by anyone. Use this only for unattended, scripted work."
        )
    gc.freeze()
    gc.enable()
    if args.transport == "http":
        from b24_mcp.serving.transport import serve_http

        serve_http(
            server, host=args.host, port=args.port, stateless=args.stateless, settings=settings, journal=app.journal
        )
    else:
        server.run()
    return 0
