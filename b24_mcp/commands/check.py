"""`b24-mcp check`: whether a deletion could work with this configuration, one finding per line, no secret."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx2

from b24_mcp.app import build_app
from b24_mcp.errors import B24Error
from b24_mcp.journal.file import check_journal
from b24_mcp.portal.client import PortalClient
from b24_mcp.settings import OAuthConfig, Settings, Webhook

Verdict = Literal["ok", "info", "warn", "FAIL"]


@dataclass(frozen=True)
class Finding:
    """One line of the report."""

    verdict: Verdict
    text: str
    fix: str | None = None  # a failure's next step, for the closing line

    def __str__(self) -> str:
        return f"{self.verdict:<5} {self.text}"


async def diagnose(
    settings: Settings,
    credentials: Webhook | OAuthConfig | None = None,
    http_transport: httpx2.AsyncBaseTransport | None = None,
) -> list[Finding]:
    """Reach the portal, check the credentials and the `crm` scope, and report the effective modes."""
    credentials = credentials or settings.credentials
    portal = build_app(settings, credentials, http_transport=http_transport).portal
    kind = "webhook" if isinstance(credentials, Webhook) else "OAuth application"
    findings = [
        Finding("info", f"portal: {portal.host} ({kind}{f', user {portal.user_id}' if portal.user_id else ''})")
    ]
    try:
        started = time.perf_counter()
        answer = await portal.call("scope", {})
        elapsed = (time.perf_counter() - started) * 1000
        findings.append(Finding("ok", f"credentials accepted; round trip {elapsed:.0f} ms"))
        scopes = [str(scope) for scope in answer.result] if isinstance(answer.result, list) else []
        if "crm" in scopes:
            findings.append(Finding("ok", f"scope: crm granted ({', '.join(scopes)})"))
        else:
            findings.append(
                Finding(
                    "FAIL",
                    f"scope: crm is not granted (granted: {', '.join(scopes) or 'none'}); add it to the "
                    "webhook or application",
                    "add the CRM (crm) scope to the webhook or application in Bitrix24 and save it",
                )
            )
        findings.append(await _profile(portal))
    except B24Error as exc:
        text = f"portal: {exc.code}: {exc.description}{f' {exc.hint}' if exc.hint else ''}"
        findings.append(Finding("FAIL", text, _portal_fix(exc)))
    finally:
        await portal.aclose()
    findings.extend(_modes(settings))
    findings.extend(Finding("info", line) for line in operations(settings))
    return findings


async def _profile(portal: PortalClient) -> Finding:
    try:
        answer = await portal.call("profile", {})
    except B24Error as exc:
        return Finding("info", f"user: could not be read ({exc.code})")
    profile = answer.result if isinstance(answer.result, dict) else {}
    name = " ".join(str(profile.get(key) or "") for key in ("NAME", "LAST_NAME")).strip() or "unnamed"
    role = ", administrator" if profile.get("ADMIN") else ""
    return Finding("info", f"user: #{profile.get('ID', '?')} {name}{role}")


def _modes(settings: Settings) -> list[Finding]:
    findings = [Finding("info", f"confirmation: {settings.confirm.value} (B24_CONFIRM)")]
    page = approval_page(settings)
    if page is not None:
        findings.append(Finding("info", page))
    if settings.confirm.value == "none":
        findings.append(
            Finding("warn", "confirmation is OFF (B24_CONFIRM=none): deletions happen without anyone confirming them")
        )
    if settings.read_only:
        findings.append(
            Finding(
                "FAIL",
                "read-only: deletions are refused (B24_READ_ONLY=true); previews work",
                "unset B24_READ_ONLY when deletions are wanted",
            )
        )
    else:
        findings.append(Finding("info", "read-only: no"))
    allowed = settings.allowed_entity_types
    findings.append(
        Finding("info", "allowed types: " + (", ".join(str(t) for t in sorted(allowed)) if allowed else "all"))
    )
    if settings.database_url is not None:
        findings.append(_shared_journal(settings.database_url.get_secret_value()))
    else:
        findings.append(_journal(settings.audit_log))
    return findings


def approval_page(settings: Settings) -> str | None:
    """Where people approve deletions on a sign-in server (B24_CONFIRM=page, or auto), in words; None elsewhere."""
    if settings.public_url is None or settings.confirm.value not in ("page", "auto"):
        return None
    who = "every deletion" if settings.confirm.value == "page" else "deletions by clients that cannot ask in a form"
    return f"approval page: {settings.public_url}/approve/… ({who}, approved there by the person signed in)"


def operations(settings: Settings, origin: str = "http://HOST:PORT") -> list[str]:
    """Where an HTTP server's load balancer and Prometheus reach it; nothing for a configuration without a token or
    sign-in (a stdio server's)."""
    if settings.mcp_http_token is None and settings.public_url is None and settings.metrics_token is None:
        return []
    if settings.mcp_http_token is not None:
        scrape = "with the bearer token B24_MCP_HTTP_TOKEN" + (
            " or B24_METRICS_TOKEN" if settings.metrics_token else ""
        )
    elif settings.metrics_token is not None:
        scrape = "with the bearer token B24_METRICS_TOKEN"
    else:  # sign-in
        scrape = "off: a sign-in server serves it only with B24_METRICS_TOKEN"
    return [
        f"probes: {origin}/healthz (alive) and {origin}/readyz (a deletion could be recorded), without a token",
        f"metrics: {origin}/metrics (Prometheus), {scrape}",
    ]


def _shared_journal(url: str) -> Finding:
    from b24_mcp.commands.db import check_database  # the database driver only when one is configured

    problem = check_database(url)
    if problem is None:
        return Finding("ok", "journal: the database of B24_DATABASE_URL answers (the replicas share it)")
    return Finding(
        "FAIL",
        f"journal: the database of B24_DATABASE_URL cannot be used ({problem}), so no deletion would happen",
        "make the database of B24_DATABASE_URL reachable (then `b24-mcp db upgrade`)",
    )


def _journal(path: Path) -> Finding:
    problem = check_journal(path)
    if problem is None:
        return Finding("ok", f"journal: {path} is writable")
    return Finding(
        "FAIL",
        f"journal: {path} cannot be written ({problem}), so no deletion would happen (B24_AUDIT_LOG)",
        "let this user write the journal's folder, or set B24_AUDIT_LOG to a file in a folder it can write",
    )


def _portal_fix(exc: B24Error) -> str:
    code = exc.code.upper()
    if code in ("INVALID_CREDENTIALS", "NO_AUTH_FOUND", "INVALID_TOKEN", "EXPIRED_TOKEN", "AUTHORIZATION_ERROR"):
        return "copy the webhook's URL again from Bitrix24 (Developer resources → Inbound webhook) into B24_WEBHOOK_URL"
    if code in ("PORTAL_UNREACHABLE", "PORTAL_TIMEOUT"):
        return (
            "check the portal's address in B24_WEBHOOK_URL and that this machine reaches it (B24_CA_BUNDLE for a "
            "private certificate authority)"
        )
    return "see the portal's code above in docs/tools.md (Error codes)"


def verdict(findings: list[Finding]) -> str:
    """The closing line: whether a deletion could work and, when not, the next step."""
    failures = [finding for finding in findings if finding.verdict == "FAIL"]
    warnings = sum(1 for finding in findings if finding.verdict == "warn")
    if not failures:
        noted = f" ({warnings} warning{'s' if warnings != 1 else ''} above)" if warnings else ""
        return (
            f"Ready: a deletion could work with this configuration{noted}. Next: add b24-mcp to your MCP client "
            "(README: Connect your portal)."
        )
    count = f"{len(failures)} problem{'s' if len(failures) != 1 else ''}"
    return f"Not ready: {count} above. Next: {failures[0].fix or 'fix the FAIL lines above'}, then run check again."


def passed(findings: list[Finding]) -> bool:
    """A deletion could work: nothing failed."""
    return all(finding.verdict != "FAIL" for finding in findings)
