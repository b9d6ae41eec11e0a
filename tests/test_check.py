"""`b24-mcp check`: a doctor that says whether a deletion could work, one finding per line, never a secret."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from b24_mcp.commands.check import Finding, diagnose, passed
from b24_mcp.sandbox.seed import NOSCOPE_USER_ID, NOSCOPE_WEBHOOK_CODE
from b24_mcp.settings import Settings, parse_webhook_url
from helpers import TLSFiles, assert_no_secret, run_b24

pytestmark = pytest.mark.anyio


async def check(make_settings: Callable[..., Settings], url: str, tls: TLSFiles, **values: object) -> list[Finding]:
    settings = make_settings(ca_bundle=tls.ca_bundle, max_retries=0, **values)
    findings = await diagnose(settings, parse_webhook_url(url, allow_http=False))
    assert_no_secret("\n".join(map(str, findings)))
    return findings


def lines(findings: list[Finding]) -> str:
    return "\n".join(map(str, findings))


async def test_a_working_configuration_passes(
    make_settings: Callable[..., Settings], webhook_url: str, tls: TLSFiles
) -> None:
    findings = await check(make_settings, webhook_url, tls)
    assert passed(findings)
    report = lines(findings)
    for expected in (
        "portal: 127.0.0.1:",
        "credentials accepted; round trip",
        "scope: crm granted",
        "user: #1",
        "confirmation: token",
        "journal:",
    ):
        assert expected in report


async def test_wrong_credentials_fail_with_the_portals_code(
    make_settings: Callable[..., Settings], https_origin: str, tls: TLSFiles
) -> None:
    findings = await check(make_settings, f"{https_origin}/rest/1/wrong-code/", tls)
    assert not passed(findings)
    assert "FAIL  portal: INVALID_CREDENTIALS" in lines(findings)


async def test_a_webhook_without_the_crm_scope_fails(
    make_settings: Callable[..., Settings], https_origin: str, tls: TLSFiles
) -> None:
    findings = await check(make_settings, f"{https_origin}/rest/{NOSCOPE_USER_ID}/{NOSCOPE_WEBHOOK_CODE}/", tls)
    assert not passed(findings)
    assert "FAIL  scope: crm is not granted" in lines(findings)


async def test_read_only_means_no_deletion_could_work(
    make_settings: Callable[..., Settings], webhook_url: str, tls: TLSFiles
) -> None:
    assert not passed(await check(make_settings, webhook_url, tls, read_only=True))


async def test_an_unwritable_journal_fails(
    make_settings: Callable[..., Settings], webhook_url: str, tls: TLSFiles, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    findings = await check(make_settings, webhook_url, tls, audit_log=blocker / "audit.jsonl")
    assert not passed(findings)
    assert "FAIL  journal:" in lines(findings)


@pytest.mark.process
def test_check_against_the_sandbox_exits_zero() -> None:
    done = run_b24("check", "--sandbox")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok    scope: crm granted" in done.stdout
    assert "sandbox-audit.jsonl" in done.stdout


@pytest.mark.process
def test_check_with_bad_configuration_names_the_variable() -> None:
    done = run_b24(
        "check", env={"B24_WEBHOOK_URL": "https://acme.bitrix24.com/rest/1/sekr3tc0de/", "B24_TIMEOUT": "-1"}
    )
    assert done.returncode == 2
    assert "B24_TIMEOUT" in done.stderr
    assert "sekr3tc0de" not in done.stdout + done.stderr


@pytest.mark.process
def test_check_against_an_unreachable_portal_fails() -> None:
    done = run_b24("check", env={"B24_WEBHOOK_URL": "https://127.0.0.1:9/rest/1/sekr3tc0de/", "B24_MAX_RETRIES": "0"})
    assert done.returncode == 1
    assert "FAIL  portal: PORTAL_UNREACHABLE" in done.stdout
    assert "sekr3tc0de" not in done.stdout + done.stderr
