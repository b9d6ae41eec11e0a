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

_DESCRIPTION = (
    "MCP server that previews and deletes Bitrix24 CRM items (crm.item.delete). Without a command it serves MCP "
    "over stdio to an MCP client (an assistant), which starts it."
)
_EPILOG = (
    "Connect it to a portal with B24_WEBHOOK_URL=https://<portal>/rest/<userId>/<code>/ (an incoming webhook with "
    "the crm scope); `b24-mcp check` then says whether a deletion could work. No portal yet? `b24-mcp demo` shows "
    "a walk-through, and `b24-mcp --sandbox` serves an emulated one. The README (README.md, also the package's "
    "page on PyPI) starts there; every setting (B24_*) is described in docs/configuration.md."
)
_ENV_FILE_HELP = "read B24_* settings from this env file too (no .env is read unless named; or B24_ENV_FILE)"
_SANDBOX_HELP = "the built-in emulated portal with demo data (no credentials, nothing real is touched)"


def _global_options(parser: argparse.ArgumentParser, *, under_command: bool) -> None:
    """--env-file and --sandbox, before or after the command: after it, they are kept only when given."""
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if under_command else {}
    parser.add_argument("--env-file", metavar="PATH", help=_ENV_FILE_HELP, **default)
    parser.add_argument("--sandbox", action="store_true", help=_SANDBOX_HELP, **default)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="b24-mcp", description=_DESCRIPTION, epilog=_EPILOG)
    parser.add_argument("--version", action="version", version=f"b24-mcp {__version__}")
    _global_options(parser, under_command=False)
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

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=description)
        _global_options(sub, under_command=True)
        return sub

    command(
        "demo",
        "a scripted walk-through against the sandbox, printed as a transcript",
        "A real MCP client starts a real `b24-mcp --sandbox` and previews, refuses, confirms and deletes, printed "
        "as a transcript. Nothing real is touched and no settings are needed; the journal it writes is then shown "
        "by `b24-mcp journal --sandbox`.",
    )
    command(
        "check",
        "check the configuration and the portal: could a deletion work?",
        "Reaches the portal with the configured credentials (B24_WEBHOOK_URL, or B24_PORTAL_URL and an OAuth "
        "token), checks the crm scope, the confirmation mode, read-only and the journal, one line each, and ends "
        "with the verdict. Exit status 0 when a deletion could work, 1 when not, 2 when the settings are wrong. "
        "With --sandbox, checks against the built-in sandbox portal.",
    )
    journal = command(
        "journal",
        "show the audit journal's recent entries (newest last); `journal reconcile` settles every unfinished "
        "intent by reading the portal",
        "Shows the audit journal (B24_AUDIT_LOG, or the shared database's), newest last; with --sandbox, the "
        "sandbox's own journal (what `b24-mcp --sandbox` and `b24-mcp demo` wrote). `journal reconcile` gives each "
        "intent without an outcome the outcome the portal shows now, one line each.",
    )
    journal.add_argument(
        "action",
        nargs="?",
        choices=["show", "reconcile"],
        default="show",
        help="show (default); reconcile: give each intent without an outcome the outcome the portal shows now "
        "(gone: deleted, confirmed by absence; still there: not deleted; unreadable: left unfinished), one line each",
    )
    journal.add_argument("--json", action="store_true", help="print the raw JSON lines")
    journal.add_argument("-n", "--limit", type=int, default=20, help="how many entries (default 20)")
    database = command(
        "db", "the database replicas share (B24_DATABASE_URL)", "The PostgreSQL database replicas share."
    )
    database.add_argument("action", choices=["upgrade"], help="upgrade: create or upgrade its schema now")
    people = command(
        "people",
        "sign-in (B24_PUBLIC_URL): list who has signed in, or revoke a person's access at once",
        "With sign-in (B24_PUBLIC_URL): list who has signed in, or revoke a person's access at once.",
    )
    people.add_argument("action", nargs="?", choices=["list", "revoke"], default="list", help="list (default), revoke")
    people.add_argument("user_id", nargs="?", type=int, metavar="USER_ID", help="revoke: the person's Bitrix24 user id")
    people.set_defaults(usage_error=people.error)
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
    if args.command == "people" and args.action == "revoke" and args.user_id is None:
        args.usage_error("revoke needs the person's Bitrix24 user id: b24-mcp people revoke USER_ID")
    from b24_mcp.errors import SettingsError
    from b24_mcp.settings import for_sandbox, load_settings

    try:
        if args.command in ("db", "people") and args.sandbox:
            raise SettingsError([f"the sandbox has no {args.command} command: {args.command} works on a real server"])
        settings = load_settings(env_file=args.env_file)
        if args.command == "demo":
            from b24_mcp.commands.demo import run_demo

            return run_demo(for_sandbox(settings).audit_log)
        if args.command == "check":
            return _check(settings, sandbox=args.sandbox, env_file=args.env_file)
        if args.command == "journal" and args.action == "reconcile":
            from b24_mcp.commands.reconcile import reconcile_command

            if args.sandbox:
                print(
                    "b24-mcp: the sandbox's portal starts afresh in every process, so its journal has nothing to "
                    "reconcile against",
                    file=sys.stderr,
                )
                return 2
            return reconcile_command(settings)
        if args.command == "journal":
            if settings.database_url is not None and not args.sandbox:
                from b24_mcp.postgres.journal import print_table_journal

                url = settings.database_url.get_secret_value()
                return print_table_journal(url, limit=args.limit, as_json=args.json)
            from b24_mcp.journal.reader import print_journal

            path = for_sandbox(settings).audit_log if args.sandbox else settings.audit_log
            return print_journal(path, limit=args.limit, as_json=args.json)
        if args.command == "db":
            if settings.database_url is None:
                print("b24-mcp: B24_DATABASE_URL is not set: there is no shared database", file=sys.stderr)
                return 2
            from b24_mcp.commands.db import upgrade_command

            return upgrade_command(settings.database_url.get_secret_value())
        if args.command == "people":
            from b24_mcp.commands.people import people_command

            if settings.public_url is None:
                print("b24-mcp: B24_PUBLIC_URL is not set: sign-in is not configured here", file=sys.stderr)
            return people_command(settings, args.action, args.user_id)
        return _serve(settings, args)
    except SettingsError as exc:
        from b24_mcp.settings import unknown_names

        for line in exc.lines:
            print(f"b24-mcp: {line}", file=sys.stderr)
        for line in unknown_names(env_file=args.env_file):  # a misspelt name is often why a setting is missing
            print(f"b24-mcp: warning: {line}", file=sys.stderr)
        return 2


def _check(settings: Any, *, sandbox: bool, env_file: str | None) -> int:
    import anyio

    from b24_mcp.commands.check import Finding, diagnose, passed, verdict
    from b24_mcp.settings import for_sandbox, unknown_names

    if settings.public_url is not None and not sandbox:  # sign-in: each person's credentials come at sign-in
        from b24_mcp.commands.people import check_signin

        return check_signin(settings)
    if sandbox:
        from b24_mcp.sandbox.link import sandbox_webhook
        from b24_mcp.sandbox.serve import sandbox_transport

        findings = anyio.run(diagnose, for_sandbox(settings), sandbox_webhook(), sandbox_transport())
    else:
        findings = anyio.run(diagnose, settings, None)
    findings = [Finding("warn", line) for line in unknown_names(env_file=env_file)] + findings
    for finding in findings:
        print(finding)
    print(verdict(findings))
    return 0 if passed(findings) else 1


def _serve(settings: Any, args: argparse.Namespace) -> int:
    from b24_mcp.telemetry.logs import configure

    configure(settings.log_level, settings.log_format)
    from b24_mcp.app import assemble

    built = assemble(settings, sandbox=args.sandbox, transport=args.transport, host=args.host, port=args.port)
    settings, server = built.settings, built.server
    warn_at_start(settings, args.env_file)
    gc.freeze()
    gc.enable()
    if args.transport == "http":
        from b24_mcp.serving.transport import serve_http

        return serve_http(
            server,
            host=args.host,
            port=args.port,
            stateless=args.stateless,
            settings=settings,
            journal=built.app.journal,
            sandbox=args.sandbox,
        )
    if sys.stdin is not None and sys.stdin.isatty():  # a person at a terminal, not an MCP client
        from b24_mcp.serving.terminal import serve_terminal, terminal_note

        print(terminal_note(sandbox=args.sandbox), file=sys.stderr, flush=True)
        return serve_terminal(server)
    server.run()
    return 0


def warn_at_start(settings: Any, env_file: str | None = None) -> None:
    """What the operator should know before the first call: misspelt names, no confirmation, no journal."""
    from b24_mcp.journal.file import check_journal
    from b24_mcp.settings import unknown_names

    logger = logging.getLogger("b24_mcp")
    for line in unknown_names(env_file=env_file):
        logger.warning("%s", line)
    if settings.confirm == "none":
        logger.warning(
            "B24_CONFIRM=none: deletions are NOT confirmed by anyone. Use this only for unattended, scripted work."
        )
    problem = None if settings.database_url is not None else check_journal(settings.audit_log)
    if problem is not None:
        logger.warning(
            "the journal %s cannot be written (%s): every deletion will be refused until it can (B24_AUDIT_LOG); "
            "previews work",
            settings.audit_log,
            problem,
        )
