"""Env files: only the one named by `--env-file` or `B24_ENV_FILE` is read; a stray `.env` decides nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from b24_mcp.settings import ConfirmMode, Settings, SettingsError, load_settings

SECRET_CODE = "zq81hf0secretcode"


def run_in(folder: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The `b24-mcp` command started in `folder`, as an MCP client starts it in the user's project folder."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("B24_")}
    return subprocess.run(
        [sys.executable, "-m", "b24_mcp", *args],
        env=clean | {"B24_AUDIT_LOG": str(folder / "state" / "audit.jsonl")} | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        cwd=folder,
    )


def refusal(**arguments: object) -> str:
    """The one line `load_settings` refuses with."""
    with pytest.raises(SettingsError) as caught:
        load_settings(**arguments)  # type: ignore[arg-type]
    (line,) = caught.value.lines
    return line


@pytest.fixture
def isolated(make_settings: Callable[..., Settings], tmp_path: Path) -> Path:
    """No B24_* variable of the developer's, and the working directory is `tmp_path`."""
    return tmp_path


def test_a_dotenv_in_the_working_directory_is_ignored(isolated: Path) -> None:
    (isolated / ".env").write_text("B24_CONFIRM=none\nB24_OAUTH_URL=https://collector.example/token\n")
    settings = load_settings()
    assert settings.confirm is ConfirmMode.AUTO
    assert settings.oauth_url == "https://oauth.bitrix.info/oauth/token/"


@pytest.mark.process
def test_the_command_ignores_a_dotenv_in_its_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("B24_CONFIRM=none\n")
    done = run_in(tmp_path, "check", "--sandbox")
    assert done.returncode == 0, done.stderr
    assert "confirmation: auto (B24_CONFIRM)" in done.stdout


@pytest.mark.process
def test_the_command_reads_the_env_file_its_option_names(tmp_path: Path) -> None:
    (tmp_path / "team.env").write_text("B24_CONFIRM=token\n")
    done = run_in(tmp_path, "check", "--sandbox", "--env-file", "team.env")
    assert done.returncode == 0, done.stderr
    assert "confirmation: token (B24_CONFIRM)" in done.stdout


@pytest.mark.process
def test_the_option_may_stand_before_the_command(tmp_path: Path) -> None:
    (tmp_path / "team.env").write_text("B24_CONFIRM=token\n")
    done = run_in(tmp_path, "--env-file", str(tmp_path / "team.env"), "check", "--sandbox")
    assert "confirmation: token (B24_CONFIRM)" in done.stdout


def test_the_env_file_B24_ENV_FILE_names_is_read(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated / "team.env").write_text("B24_CONFIRM=elicit\n")
    monkeypatch.setenv("B24_ENV_FILE", str(isolated / "team.env"))
    assert load_settings().confirm is ConfirmMode.ELICIT


def test_the_option_wins_over_B24_ENV_FILE(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated / "env.a").write_text("B24_CONFIRM=elicit\n")
    (isolated / "env.b").write_text("B24_CONFIRM=token\n")
    monkeypatch.setenv("B24_ENV_FILE", str(isolated / "env.a"))
    assert load_settings(env_file=isolated / "env.b").confirm is ConfirmMode.TOKEN


def test_B24_ENV_FILE_inside_an_env_file_names_nothing(isolated: Path) -> None:
    (isolated / "second.env").write_text("B24_CONFIRM=none\n")
    (isolated / "first.env").write_text(f"B24_ENV_FILE={isolated / 'second.env'}\n")
    assert load_settings(env_file=isolated / "first.env").confirm is ConfirmMode.AUTO


def test_the_environment_wins_over_the_env_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated / "team.env").write_text("B24_CONFIRM=none\nB24_CONFIRM_TTL=60\n")
    monkeypatch.setenv("B24_CONFIRM", "token")
    settings = load_settings(env_file=isolated / "team.env")
    assert (settings.confirm, settings.confirm_ttl) == (ConfirmMode.TOKEN, 60)


def test_empty_values_in_an_env_file_count_as_unset(isolated: Path) -> None:
    (isolated / "team.env").write_text("B24_CONFIRM=\nB24_CONFIRM_TTL=\n")
    settings = load_settings(env_file=isolated / "team.env")
    assert (settings.confirm, settings.confirm_ttl) == (ConfirmMode.AUTO, 300)


def test_a_missing_env_file_is_one_line_naming_it(isolated: Path) -> None:
    assert refusal(env_file=isolated / "nope.env") == f"the env file '{isolated / 'nope.env'}' does not exist"


def test_a_folder_is_not_an_env_file(isolated: Path) -> None:
    assert refusal(env_file=isolated) == f"the env file '{isolated}' is not a regular file"


def test_a_fifo_is_refused_without_waiting_for_a_writer(isolated: Path) -> None:
    os.mkfifo(isolated / "pipe.env")
    assert refusal(env_file=isolated / "pipe.env").endswith("is not a regular file")


def test_an_env_file_that_is_not_utf8_is_one_line_naming_it(isolated: Path) -> None:
    (isolated / "latin1.env").write_bytes("B24_CLIENT_ID=caf\xe9\n".encode("latin-1"))
    assert (
        refusal(env_file=isolated / "latin1.env")
        == f"the env file '{isolated / 'latin1.env'}' is not UTF-8 text (byte 17)"
    )


def test_a_utf8_byte_order_mark_is_accepted(isolated: Path) -> None:
    (isolated / "bom.env").write_bytes(b"\xef\xbb\xbfB24_CONFIRM=token\n")
    assert load_settings(env_file=isolated / "bom.env").confirm is ConfirmMode.TOKEN


def test_a_line_that_is_not_an_assignment_is_named_by_number_not_content(isolated: Path) -> None:
    (isolated / "broken.env").write_text(f"B24_CONFIRM=token\nB24_WEBHOOK_URL='{SECRET_CODE}\n")
    line = refusal(env_file=isolated / "broken.env")
    assert line == f"the env file '{isolated / 'broken.env'}' has a line 2 that is not NAME=value"
    assert SECRET_CODE not in line


def test_a_huge_env_file_is_refused(isolated: Path) -> None:
    (isolated / "huge.env").write_bytes(b"#" * (1 << 20) + b"\n")
    assert refusal(env_file=isolated / "huge.env").endswith("is larger than 1024 KiB")


@pytest.mark.process
def test_the_command_names_a_bad_env_file_in_one_line(tmp_path: Path) -> None:
    done = run_in(tmp_path, "--env-file", "missing.env")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["b24-mcp: the env file 'missing.env' does not exist"]


@pytest.mark.process
def test_a_bad_B24_ENV_FILE_stops_the_command_in_one_line(tmp_path: Path) -> None:
    done = run_in(tmp_path, env={"B24_ENV_FILE": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"b24-mcp: the env file '{tmp_path}' is not a regular file"]
