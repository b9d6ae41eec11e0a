"""The audit journal: whole lines or a refusal, attempt ids, unfinished intents, a file checked before use, and a
table that nothing in the file can take over."""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from b24_mcp.errors import Refusal
from b24_mcp.journal import reader as journal_module
from b24_mcp.journal.file import Journal, check_journal
from b24_mcp.journal.reader import print_journal, read_recent, read_tail
from b24_mcp.journal.record import Attempt, ConfirmedBy, Entry, JournalUnwritable

pytestmark = pytest.mark.anyio


def attempt(item_id: int = 42, title: str = "Acme renewal", **item: Any) -> Attempt:
    return Attempt("acme.bitrix24.com", 1, 2, item_id, ConfirmedBy.TOKEN, {"id": item_id, "title": title, **item})


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def failing_write(after: Callable[[int], int], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """`os.write` writes `after(len)` bytes once, then fails with ENOSPC; returns the sizes it was asked for."""
    real_write = os.write
    asked: list[int] = []

    def write(fd: int, data: Any) -> int:
        asked.append(len(data))
        if len(asked) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, bytes(data[: after(len(data))]))

    monkeypatch.setattr("b24_mcp.journal.file.os.write", write)
    return asked


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit.jsonl"


# Lines and attempt ids


async def test_an_intent_and_its_outcome_share_one_attempt_id(path: Path) -> None:
    deal = attempt()
    await Journal(path).write("intent", deal)
    await Journal(path).write("deleted", deal)
    first, second = lines(path)
    assert first["attempt"] == second["attempt"] == deal.attempt_id
    assert (first["event"], second["event"]) == ("intent", "deleted")


def test_every_attempt_gets_its_own_short_hex_id() -> None:
    ids = {attempt().attempt_id for _ in range(100)}
    assert len(ids) == 100 and all(len(each) == 16 and int(each, 16) >= 0 for each in ids)


async def test_a_line_holds_the_snapshot_once_and_every_field_once(path: Path) -> None:
    title = "x" * 1_000_000
    await Journal(path).write("intent", attempt(title=title))
    raw = path.read_text()
    assert raw.count(title) == 1 and len(raw) < len(title) + 1000
    assert set(json.loads(raw)) == {"ts", "event", "attempt", "portal", "userId", "entityTypeId", "id"} | {
        "confirmation",
        "item",
    }


async def test_a_line_escapes_what_a_terminal_would_act_on_and_keeps_the_exact_value(path: Path) -> None:
    title = "\x1b[2J\u2028\u202e\x85Evil"
    await Journal(path).write("intent", attempt(title=title))
    raw = path.read_bytes()
    assert b"\x1b" not in raw and "\u2028".encode() not in raw and "\u202e".encode() not in raw
    assert raw.count(b"\n") == 1 and len(path.read_text().splitlines()) == 1
    assert lines(path)[0]["item"]["title"] == title


async def test_a_lone_surrogate_in_a_snapshot_is_recorded_as_it_came(path: Path) -> None:
    await Journal(path).write("intent", attempt(title="a\ud800b"))
    assert lines(path)[0]["item"]["title"] == "a\ud800b"


async def test_an_error_line_carries_the_code_description_and_note(path: Path) -> None:
    await Journal(path).write("error", attempt(), error="ACCESS_DENIED", error_description="No.", note="n")
    (line,) = lines(path)
    assert (line["error"], line["error_description"], line["note"]) == ("ACCESS_DENIED", "No.", "n")


async def test_concurrent_writers_never_interleave_their_lines(path: Path) -> None:
    async with anyio.create_task_group() as group:
        for writer in range(4):
            entries = [Entry("intent", attempt(writer * 100 + n, title="y" * 5000)) for n in range(10)]
            for each in entries:
                group.start_soon(Journal(path).write_many, [each])
    assert sorted(line["id"] for line in lines(path)) == sorted(w * 100 + n for w in range(4) for n in range(10))


# Whole lines or a refusal


async def test_a_short_write_is_continued_until_every_byte_is_written(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    monkeypatch.setattr("b24_mcp.journal.file.os.write", lambda fd, data: real_write(fd, bytes(data[:7])))
    entries = [Entry("intent", attempt(n)) for n in range(3)]
    await Journal(path).write_many(entries)
    assert [line["id"] for line in lines(path)] == [0, 1, 2]


async def test_a_write_cut_short_by_a_full_disk_keeps_only_whole_lines_and_says_how_many(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_write(lambda size: size // 2, monkeypatch)
    entries = [Entry("intent", attempt(n)) for n in range(3)]
    with pytest.raises(JournalUnwritable) as refused:
        await Journal(path).write_many(entries)
    assert (refused.value.code, refused.value.durable) == ("JOURNAL_UNWRITABLE", 1)
    assert "No space left on device" in refused.value.description
    assert path.read_bytes().endswith(b"\n") and [line["id"] for line in lines(path)] == [0]


async def test_a_failed_single_write_leaves_the_file_as_it_was(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await Journal(path).write("deleted", attempt(1))
    before = path.read_bytes()
    failing_write(lambda size: size - 1, monkeypatch)
    with pytest.raises(Refusal) as refused:
        await Journal(path).write("intent", attempt(2))
    assert isinstance(refused.value, JournalUnwritable) and refused.value.durable == 0
    assert path.read_bytes() == before


async def test_a_write_refused_before_any_byte_counts_nothing_as_on_disk(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_write(lambda size: 0, monkeypatch)
    with pytest.raises(JournalUnwritable) as refused:
        await Journal(path).write_many([Entry("intent", attempt(n)) for n in range(3)])
    assert refused.value.durable == 0 and path.read_bytes() == b""


async def test_a_failed_fsync_counts_nothing_as_on_disk(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr("b24_mcp.journal.file.os.fsync", fsync)
    with pytest.raises(JournalUnwritable) as refused:
        await Journal(path).write_many([Entry("intent", attempt(n)) for n in range(3)])
    assert refused.value.durable == 0


async def test_every_write_is_fsynced_once(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync
    synced: list[int] = []

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(len(lines(path)))

    monkeypatch.setattr("b24_mcp.journal.file.os.fsync", fsync)
    await Journal(path).write_many([Entry("intent", attempt(n)) for n in range(3)])
    await Journal(path).write("deleted", attempt(0))
    assert synced == [3, 4]


async def test_a_fragment_left_by_a_crash_is_ended_before_the_next_line(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(b'{"ts":"2026-11-28T10:00:00.000Z","event":"int')
    path.chmod(0o600)
    await Journal(path).write("intent", attempt(7))
    tail = read_tail(path, 10)
    assert [entry["id"] for entry in tail.entries] == [7] and tail.skipped == 1


async def test_nothing_to_write_touches_nothing(path: Path) -> None:
    await Journal(path).write_many([])
    assert not path.parent.exists()


async def fill(journal: Journal) -> tuple[int, JournalUnwritable]:
    """Write runs of three 4 kB intents until the journal refuses: the lines written before, and the refusal."""
    on_disk = 0
    for run in range(100):
        try:
            await journal.write_many([Entry("intent", attempt(run * 3 + n, title="z" * 3850)) for n in range(3)])
        except JournalUnwritable as refused:
            return on_disk, refused
        on_disk += 3
    raise AssertionError("the disk never filled up")


@pytest.mark.process
async def test_a_really_full_disk_leaves_only_whole_lines_and_counts_them(small_disk: Path) -> None:
    journal = Journal(small_disk / "b24-mcp" / "audit.jsonl")
    on_disk, refused = await fill(journal)
    on_disk += refused.durable
    assert "No space left on device" in refused.description
    assert journal.path.read_bytes().endswith(b"\n")
    assert [line["id"] for line in lines(journal.path)] == list(range(on_disk))


# The file


async def test_a_symlinked_journal_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("precious\n")
    target.chmod(0o600)
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    with pytest.raises(JournalUnwritable) as refused:
        await Journal(link).write("intent", attempt())
    assert refused.value.code == "JOURNAL_UNWRITABLE" and "symbolic link" in refused.value.description
    assert target.read_text() == "precious\n" and stat.S_IMODE(target.stat().st_mode) == 0o600


async def test_a_dangling_symlink_is_not_followed_to_create_its_target(tmp_path: Path) -> None:
    link = tmp_path / "audit.jsonl"
    link.symlink_to(tmp_path / "created-through-the-link")
    with pytest.raises(JournalUnwritable):
        await Journal(link).write("intent", attempt())
    assert not (tmp_path / "created-through-the-link").exists()


async def test_a_journal_other_users_can_read_is_refused_and_left_as_it_is(path: Path) -> None:
    path.parent.mkdir()
    path.write_text("")
    path.chmod(0o644)
    with pytest.raises(JournalUnwritable) as refused:
        await Journal(path).write("intent", attempt())
    assert "mode 0644" in refused.value.description and refused.value.hint is not None
    assert f"chmod 600 {path}" in refused.value.hint
    assert path.read_text() == "" and stat.S_IMODE(path.stat().st_mode) == 0o644


async def test_a_journal_other_users_can_write_is_refused(path: Path) -> None:
    path.parent.mkdir()
    path.write_text("")
    path.chmod(0o620)
    with pytest.raises(JournalUnwritable, match="mode 0620"):
        await Journal(path).write("intent", attempt())


async def test_a_journal_that_is_not_a_regular_file_is_refused_without_waiting(path: Path) -> None:
    path.parent.mkdir()
    os.mkfifo(path, 0o600)
    with anyio.fail_after(5), pytest.raises(JournalUnwritable, match="not a regular file"):
        await Journal(path).write("intent", attempt())


async def test_a_new_journal_is_0600_and_every_folder_created_for_it_0700(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "audit.jsonl"
    await Journal(path).write("intent", attempt())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


async def test_a_journal_under_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(JournalUnwritable):
        await Journal(blocker / "audit.jsonl").write("intent", attempt())


def test_check_journal_finds_what_a_write_would_refuse(tmp_path: Path) -> None:
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "target")
    open_file = tmp_path / "open.jsonl"
    open_file.write_text("")
    open_file.chmod(0o644)
    assert check_journal(tmp_path / "new" / "audit.jsonl") is None
    assert "symbolic link" in (check_journal(link) or "")
    assert "chmod 600" in (check_journal(open_file) or "")
    assert not (tmp_path / "new").exists()


# Unfinished intents


async def write_events(path: Path, *events: tuple[str, Attempt]) -> None:
    for event, deal in events:
        await Journal(path).write(event, deal)  # type: ignore[arg-type]


async def test_an_intent_without_an_outcome_is_unfinished(path: Path) -> None:
    done, killed = attempt(1), attempt(2)
    await write_events(path, ("intent", done), ("deleted", done), ("intent", killed))
    tail = read_tail(path, 20)
    assert tail.unfinished == {2} and tail.unfinished_before == 0


async def test_an_error_outcome_finishes_an_intent_and_a_cancelled_line_is_not_an_intent(path: Path) -> None:
    failed, declined = attempt(1), attempt(2)
    await write_events(path, ("intent", failed), ("error", failed), ("cancelled", declined))
    assert read_tail(path, 20).unfinished == frozenset()


async def test_an_intent_older_than_the_tail_is_paired_with_its_outcome_in_it(path: Path) -> None:
    deal = attempt(1)
    await write_events(path, ("intent", deal), ("deleted", deal))
    tail = read_tail(path, 1)
    assert [entry["event"] for entry in tail.entries] == ["deleted"]
    assert (tail.unfinished, tail.unfinished_before) == (frozenset(), 0)


async def test_unfinished_intents_older_than_the_tail_are_counted_with_the_reach_that_shows_them(path: Path) -> None:
    killed = attempt(99)
    await write_events(path, ("intent", killed))
    for deal in map(attempt, range(5)):
        await write_events(path, ("intent", deal), ("deleted", deal))
    tail = read_tail(path, 3)
    assert (tail.unfinished, tail.unfinished_before, tail.reach) == (frozenset(), 1, 11)
    assert read_tail(path, tail.reach).unfinished == {0}


async def test_the_same_item_attempted_twice_pairs_by_attempt_id(path: Path) -> None:
    first, second = attempt(5), attempt(5)
    await write_events(path, ("intent", first), ("intent", second), ("error", second))
    assert read_tail(path, 20).unfinished == {0}


def test_lines_written_before_attempt_ids_pair_by_portal_type_and_id(path: Path) -> None:
    path.parent.mkdir()
    old = {"portal": "acme.bitrix24.com", "entityTypeId": 2}
    path.write_text(
        "\n".join(
            json.dumps(old | entry)
            for entry in ({"event": "intent", "id": 1}, {"event": "deleted", "id": 1}, {"event": "intent", "id": 2})
        )
        + "\n"
    )
    assert read_tail(path, 20).unfinished == {2}


async def test_the_table_marks_an_unfinished_intent_and_says_to_check_the_portal(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done, killed = attempt(1), attempt(43)
    await write_events(path, ("intent", done), ("deleted", done), ("intent", killed))
    assert print_journal(path, limit=20, as_json=False) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5
    assert out[3].split()[1:3] == ["intent", "UNFINISHED"] and "UNFINISHED" not in out[1] + out[2]
    assert out[4].startswith("UNFINISHED: 1 deletion attempt(s) have an intent but no outcome")
    assert "Check the portal" in out[4] and out[4].endswith("type 2 id 43.")


async def test_the_table_points_to_unfinished_intents_older_than_it_shows(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deal = attempt(1)
    await write_events(path, ("intent", attempt(99)), ("intent", deal), ("deleted", deal))
    print_journal(path, limit=1, as_json=False)
    assert "`b24-mcp journal -n 3` shows them" in capsys.readouterr().out


# Reading and the table


async def test_titles_escape_sequences_are_shown_in_the_table_not_sent(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await Journal(path).write("deleted", attempt(title="\x1b[2J\x1b[31mEvil\x1b]0;owned\x07"))
    print_journal(path, limit=20, as_json=False)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert out.splitlines()[1].endswith(r"\x1b[2J\x1b[31mEvil\x1b]0;owned\x07")


async def test_a_newline_in_a_title_cannot_forge_a_row(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forged = "Acme\n2026-11-28T10:00:00.000Z  deleted  2  99  Forged\rAcme"
    await Journal(path).write("deleted", attempt(title=forged))
    print_journal(path, limit=20, as_json=False)
    _header, row = capsys.readouterr().out.splitlines()
    assert row.endswith(r"Acme\n2026-11-28T10:00:00.000Z  deleted  2  99  Forged\rAcme")


async def test_error_codes_are_escaped_in_the_table(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await Journal(path).write("error", attempt(title="Acme"), error="X\x1b[0m\nY", error_description="d")
    print_journal(path, limit=20, as_json=False)
    assert capsys.readouterr().out.splitlines()[1].endswith(r"Acme [X\x1b[0m\nY]")


async def test_a_long_title_is_capped_in_the_table(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await Journal(path).write("deleted", attempt(title="x" * 1000))
    print_journal(path, limit=20, as_json=False)
    assert capsys.readouterr().out.splitlines()[1].endswith("  " + "x" * 59 + "…")


def test_every_cell_read_from_the_file_is_escaped(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path.parent.mkdir()
    path.write_text(json.dumps({"ts": "\x1b[2J", "event": "deleted\n", "entityTypeId": "\u202e", "id": 1}) + "\n")
    path.chmod(0o600)
    print_journal(path, limit=20, as_json=False)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and len(out.splitlines()) == 2


async def test_json_output_escapes_terminal_controls_and_reads_back_exactly(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    title = "\x1b[2J\u202eEvil\ud800"
    await Journal(path).write("deleted", attempt(title=title))
    print_journal(path, limit=20, as_json=True)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert json.loads(out)["item"]["title"] == title


async def test_a_symlinked_journal_is_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "target.jsonl"
    await Journal(target).write("deleted", attempt())
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    assert print_journal(link, limit=20, as_json=False) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "symbolic link" in captured.err


async def test_a_journal_others_can_read_is_shown_with_a_warning(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await Journal(path).write("deleted", attempt())
    path.chmod(0o644)
    assert print_journal(path, limit=20, as_json=False) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 and "chmod 600" in captured.err


def test_lines_that_are_not_entries_are_skipped_and_counted(path: Path) -> None:
    path.parent.mkdir()
    path.write_text('not json\n[1]\n{"event":"deleted","id":1}\n' + "[" * 100_000 + "\n")
    tail = read_tail(path, 20)
    assert [entry["id"] for entry in tail.entries] == [1] and tail.skipped == 3


def test_a_line_longer_than_the_bound_is_skipped_unread(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "MAX_LINE_BYTES", 100)
    path.parent.mkdir()
    path.write_text(json.dumps({"event": "deleted", "id": 1, "item": {"title": "x" * 500}}) + '\n{"id":2}\n')
    tail = read_tail(path, 20)
    assert [entry["id"] for entry in tail.entries] == [2] and tail.skipped == 1


def test_read_recent_returns_the_last_entries_oldest_first(path: Path) -> None:
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"id": n}) + "\n" for n in range(30)))
    assert [entry["id"] for entry in read_recent(path, 3)] == [27, 28, 29]


def test_no_journal_reads_as_no_entries(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert read_recent(path, 20) == []
    assert print_journal(path, limit=20, as_json=False) == 0
    assert capsys.readouterr().out == f"No journal entries in {path}.\n"
