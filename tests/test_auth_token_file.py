"""The token file is hostile until checked: links planted at its name or at the temporary name never receive
the tokens nor feed us others; a file others may read is tightened, one others may write is refused."""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
import time
from pathlib import Path

import pytest

from b24_mcp.portal.token_file import read_token_file
from b24_mcp.secure.files import write_private_file

HOST = "acme.bitrix24.com"
ACCESS, REFRESH = "access0123456789abcdef", "refresh0123456789abcdef"
TOKENS = {"portal": HOST, "access_token": ACCESS, "refresh_token": REFRESH, "user_id": 7}


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "b24-tokens.json"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A file a planted link points at: it must never receive the tokens."""
    target = tmp_path / "attacker" / "loot"
    target.parent.mkdir()
    target.write_bytes(b"")
    return target


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat(follow_symlinks=False).st_mode)


def saved(path: Path, tokens: dict[str, object] = TOKENS, permissions: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tokens))
    path.chmod(permissions)
    return path


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def test_tokens_are_written_owner_only_and_read_back(token_file: Path) -> None:
    write_private_file(token_file, json.dumps(TOKENS).encode())
    assert mode(token_file) == 0o600
    assert read_token_file(token_file, HOST) == TOKENS
    assert [path.name for path in token_file.parent.iterdir()] == [token_file.name]  # no temporary file left


def test_a_link_planted_at_the_temporary_name_never_receives_the_tokens(
    token_file: Path, elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets, "token_hex", lambda nbytes=None: "predictable")
    token_file.parent.mkdir(parents=True)
    (token_file.parent / f".{token_file.name}.predictable.tmp").symlink_to(elsewhere)
    with pytest.raises(FileExistsError):
        write_private_file(token_file, json.dumps(TOKENS).encode())
    assert elsewhere.read_bytes() == b""
    assert not token_file.exists()


def test_a_link_at_the_old_predictable_temporary_name_is_ignored(token_file: Path, elsewhere: Path) -> None:
    token_file.parent.mkdir(parents=True)
    (token_file.parent / f".{token_file.name}.{os.getpid()}.tmp").symlink_to(elsewhere)
    write_private_file(token_file, json.dumps(TOKENS).encode())
    assert elsewhere.read_bytes() == b""
    assert read_token_file(token_file, HOST) == TOKENS


def test_a_link_planted_at_the_token_file_is_replaced_not_followed(token_file: Path, elsewhere: Path) -> None:
    token_file.parent.mkdir(parents=True)
    token_file.symlink_to(elsewhere)
    write_private_file(token_file, json.dumps(TOKENS).encode())
    assert elsewhere.read_bytes() == b""
    assert not token_file.is_symlink() and mode(token_file) == 0o600


def test_a_token_file_that_is_a_link_is_not_read(
    token_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    planted = saved(tmp_path / "attacker" / "tokens.json")
    token_file.parent.mkdir(parents=True)
    token_file.symlink_to(planted)
    assert read_token_file(token_file, HOST) is None
    assert len(warnings(caplog)) == 1 and "symbolic link" in warnings(caplog)[0]


def test_a_token_file_readable_by_others_is_tightened_and_used(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saved(token_file, permissions=0o644)
    assert read_token_file(token_file, HOST) == TOKENS
    assert mode(token_file) == 0o600
    [line] = warnings(caplog)
    assert "0644" in line and "re-authorise" in line
    assert ACCESS not in caplog.text and REFRESH not in caplog.text


def test_a_token_file_writable_by_others_is_refused(token_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    saved(token_file, permissions=0o666)
    assert read_token_file(token_file, HOST) is None
    [line] = warnings(caplog)
    assert "write" in line
    assert ACCESS not in caplog.text and REFRESH not in caplog.text


def test_a_fifo_at_the_token_file_is_not_waited_on(token_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    token_file.parent.mkdir(parents=True)
    os.mkfifo(token_file, 0o600)
    started = time.monotonic()
    assert read_token_file(token_file, HOST) is None
    assert time.monotonic() - started < 1
    assert "not a regular file" in warnings(caplog)[0]


def test_a_huge_token_file_is_not_read(token_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    saved(token_file, {**TOKENS, "padding": "x" * 100_000})
    assert read_token_file(token_file, HOST) is None
    assert "too large" in warnings(caplog)[0]


@pytest.mark.parametrize(
    "tokens",
    [
        {**TOKENS, "portal": "other.bitrix24.com"},
        {**TOKENS, "access_token": {"not": "a token"}},
        {**TOKENS, "access_token": ""},
        ["not", "an", "object"],
    ],
    ids=["other-portal", "token-not-a-string", "empty-token", "not-an-object"],
)
def test_a_token_file_of_the_wrong_shape_is_not_used(token_file: Path, tokens: object) -> None:
    token_file.parent.mkdir(parents=True)
    token_file.write_text(json.dumps(tokens))
    token_file.chmod(0o600)
    assert read_token_file(token_file, HOST) is None


def test_fields_of_the_wrong_type_are_dropped(token_file: Path) -> None:
    saved(token_file, {**TOKENS, "refresh_token": 12345, "user_id": "7"})
    assert read_token_file(token_file, HOST) == {**TOKENS, "refresh_token": None, "user_id": None}
