"""The `b24-mcp` command as a newcomer meets it: options anywhere, help that points on, `check`'s verdict.

In-process: `main()` with the environment isolated and stdout/stderr captured.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from b24_mcp.commands.cli import main, warn_at_start
from b24_mcp.settings import load_settings


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No B24_* variable of the developer's; the journal in a scratch folder. The journal's path."""
    for name in list(os.environ):
        if name.upper().startswith("B24_"):
            monkeypatch.delenv(name)
    journal = tmp_path / "state" / "audit.jsonl"
    monkeypatch.setenv("B24_AUDIT_LOG", str(journal))
    return journal


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The exit status, stdout and stderr of `b24-mcp *argv`."""
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("argv", [["--sandbox", "check"], ["check", "--sandbox"]])
def test_the_sandbox_option_works_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    status, out, err = run(capsys, *argv)
    assert status == 0, out + err
    assert "ok    scope: crm granted" in out


def test_check_ends_with_the_verdict_and_the_next_step(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "check", "--sandbox")
    assert status == 0
    assert out.splitlines()[-1].startswith("Ready: a deletion could work with this configuration. Next: add b24-mcp")


def test_check_that_fails_ends_with_what_to_do_next(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B24_READ_ONLY", "true")
    status, out, _ = run(capsys, "check", "--sandbox")
    assert status == 1
    assert out.splitlines()[-1] == (
        "Not ready: 1 problem above. Next: unset B24_READ_ONLY when deletions are wanted, then run check again."
    )


def test_check_warns_that_confirmation_is_off(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B24_CONFIRM", "none")
    status, out, _ = run(capsys, "check", "--sandbox")
    assert status == 0
    assert "warn  confirmation is OFF (B24_CONFIRM=none)" in out
    assert "(1 warning above)" in out.splitlines()[-1]


def test_check_warns_of_a_misspelt_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B24_CONFRIM", "none")
    _, out, _ = run(capsys, "check", "--sandbox")
    assert "warn  B24_CONFRIM is not a b24-mcp setting and is ignored; did you mean B24_CONFIRM?" in out


def test_check_warns_of_a_misspelling_in_the_env_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env_file = tmp_path / "b24.env"
    env_file.write_text("b24_read_only=false\nB24_READ_OLNY=true\n")
    status, out, _ = run(capsys, "check", "--sandbox", "--env-file", str(env_file))
    assert status == 0
    assert "warn  B24_READ_OLNY is not a b24-mcp setting and is ignored; did you mean B24_READ_ONLY?" in out


def test_a_missing_setting_is_reported_with_the_misspelling_that_explains_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("B24_WEBHOK_URL", "https://acme.bitrix24.com/rest/1/zq81hf0secretcode/")
    status, _, err = run(capsys, "check")
    assert status == 2
    assert "b24-mcp: B24_WEBHOOK_URL is not set" in err
    assert (
        "b24-mcp: warning: B24_WEBHOK_URL is not a b24-mcp setting and is ignored; did you mean B24_WEBHOOK_URL?" in err
    )
    assert "zq81hf0secretcode" not in err


def test_check_names_an_unwritable_journal_folder_as_a_permission_problem(
    capsys: pytest.CaptureFixture[str], isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated.parent.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes any folder: let the check see what another user would
        monkeypatch.setattr("b24_mcp.journal.file.os.access", lambda path, mode: False)
    status, out, _ = run(capsys, "check", "--sandbox")
    assert status == 1
    assert f"permission denied: this user cannot create files in {isolated.parent}" in out


@pytest.mark.parametrize("argv", [["journal", "--sandbox"], ["--sandbox", "journal"]])
def test_the_sandbox_journal_is_the_one_beside_the_journal(
    capsys: pytest.CaptureFixture[str], isolated: Path, argv: list[str]
) -> None:
    isolated.parent.mkdir(mode=0o700)
    (isolated.parent / "sandbox-audit.jsonl").write_text("not an entry\n")
    os.chmod(isolated.parent / "sandbox-audit.jsonl", 0o600)
    status, _, err = run(capsys, *argv)
    assert status == 0
    assert "1 line(s) of the journal are not entries" in err


def test_the_env_file_option_works_after_the_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env_file = tmp_path / "b24.env"
    env_file.write_text("B24_READ_ONLY=true\n")
    status, out, _ = run(capsys, "check", "--sandbox", "--env-file", str(env_file))
    assert status == 1 and "FAIL  read-only" in out


def test_the_sandbox_has_no_people_or_database(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "people", "--sandbox")
    assert (status, err) == (2, "b24-mcp: the sandbox has no people command: people works on a real server\n")


def test_the_help_names_the_webhook_variable_and_the_readme(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    text = " ".join(out.split())
    assert status == 0
    assert "B24_WEBHOOK_URL=https://<portal>/rest/<userId>/<code>/" in text and "README" in text


@pytest.mark.parametrize(("command", "said"), [("check", "ends with the verdict"), ("demo", "as a transcript")])
def test_a_commands_help_describes_it(capsys: pytest.CaptureFixture[str], command: str, said: str) -> None:
    status, out, _ = run(capsys, command, "--help")
    assert status == 0 and said in " ".join(out.split())


def test_people_says_when_sign_in_is_not_configured(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "people")
    assert status == 0
    assert err == "b24-mcp: B24_PUBLIC_URL is not set: sign-in is not configured here\n"
    assert out.startswith("No one has signed in")


def test_revoking_without_a_user_id_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "people", "revoke")
    assert (status, out) == (2, "")
    assert err.startswith("usage: b24-mcp people") and "revoke needs the person's Bitrix24 user id" in err


def test_a_port_in_use_is_one_line(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, _, err = run(capsys, "--sandbox", "--transport", "http", "--port", str(port))
    assert (status, err) == (
        2,
        f"b24-mcp: cannot listen: port {port} is in use on 127.0.0.1 (another server?); stop it or choose another "
        "with --port\n",
    )
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []


def test_the_server_warns_at_start_of_a_journal_it_cannot_write_and_of_a_misspelling(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("B24_AUDIT_LOG", str(blocker / "audit.jsonl"))
    monkeypatch.setenv("B24_CONFRIM", "none")
    with caplog.at_level(logging.WARNING, logger="b24_mcp"):
        warn_at_start(load_settings())
    assert [record.getMessage() for record in caplog.records] == [
        "B24_CONFRIM is not a b24-mcp setting and is ignored; did you mean B24_CONFIRM?",
        f"the journal {blocker / 'audit.jsonl'} cannot be written (Not a directory): every deletion will be refused "
        "until it can (B24_AUDIT_LOG); previews work",
    ]
