"""The journal file read back: the tail `b24-mcp journal` prints (a table, or JSON lines), unfinished attempts
shown first; lines that are not entries skipped and counted, an over-long line skipped unread."""

from __future__ import annotations

import errno
import json
import os
import sys
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from b24_mcp.journal.access import _open, _reason, _UnusableError
from b24_mcp.journal.record import OUTCOMES
from b24_mcp.text import for_terminal, safe_json

MAX_LINE_BYTES = 64 * 1024 * 1024
TITLE_WIDTH = 60
_CELL_WIDTH = 40
_UNFINISHED = "UNFINISHED"
_LISTED = 10


@dataclass(frozen=True)
class Tail:
    """The end of a journal as `b24-mcp journal` shows it.

    An intent is *unfinished* when no `deleted` or `error` line with its `attempt` id comes after it anywhere in the
    file (lines written before attempt ids existed pair by portal, type and id). The whole file is read once, so
    an intent older than the tail is still paired with an outcome inside it, and unfinished intents older than the
    tail are counted.
    """

    entries: list[dict[str, Any]]
    """The last `limit` entries (JSON objects), oldest first."""
    unfinished: frozenset[int]
    """Indices into `entries` of the unfinished intents."""
    unfinished_before: int
    """Unfinished intents older than `entries`."""
    reach: int
    """How many entries back from the end the oldest unfinished intent is (0 when there is none)."""
    skipped: int
    """Lines that are not entries: cut off, not a JSON object, or longer than `MAX_LINE_BYTES`."""
    problem: str | None = None
    """Why the server would refuse to write to this file (see `Journal`), when it would."""


def read_tail(path: Path, limit: int) -> Tail:
    """The journal's last `limit` entries and what is unfinished; empty when there is no journal.

    Raises `OSError` when the file cannot be read, or is a symbolic link or not a regular file.
    """
    try:
        fd, unusable = _open(path, os.O_RDONLY, strict=False)
    except FileNotFoundError:
        return Tail([], frozenset(), 0, 0, 0)
    except _UnusableError as exc:
        raise OSError(errno.EINVAL, str(exc)) from None
    problem = f"{unusable}. {unusable.hint}" if unusable is not None else None
    tail: deque[tuple[int, dict[str, Any]]] = deque(maxlen=max(limit, 0))
    open_intents: dict[tuple[str, ...], int] = {}
    count = skipped = 0
    with os.fdopen(fd, "rb") as file:
        for line in _lines(file):
            entry = _parse(line)
            if entry is None:
                skipped += 1
                continue
            key = _attempt_key(entry)
            if entry.get("event") == "intent":
                open_intents[key] = count
            elif entry.get("event") in OUTCOMES:
                open_intents.pop(key, None)
            tail.append((count, entry))
            count += 1
    first = count - len(tail)
    unfinished = frozenset(index - first for index in open_intents.values() if index >= first)
    before = sum(1 for index in open_intents.values() if index < first)
    reach = count - min(open_intents.values()) if open_intents else 0
    return Tail([entry for _, entry in tail], unfinished, before, reach, skipped, problem)


def unfinished_intents(path: Path) -> list[dict[str, Any]]:
    """Every intent of the journal without an outcome (see `Tail`), in the file's order; empty when there is no
    journal. Raises `OSError` as `read_tail` does."""
    try:
        fd, _ = _open(path, os.O_RDONLY, strict=False)
    except FileNotFoundError:
        return []
    except _UnusableError as exc:
        raise OSError(errno.EINVAL, str(exc)) from None
    open_intents: dict[tuple[str, ...], dict[str, Any]] = {}
    with os.fdopen(fd, "rb") as file:
        for line in _lines(file):
            entry = _parse(line)
            if entry is None:
                continue
            if entry.get("event") == "intent":
                open_intents[_attempt_key(entry)] = entry
            elif entry.get("event") in OUTCOMES:
                open_intents.pop(_attempt_key(entry), None)
    return list(open_intents.values())


def read_recent(path: Path, limit: int) -> list[dict[str, Any]]:
    """The last `limit` entries of a journal, oldest first; empty when there is no journal (see `read_tail`)."""
    return read_tail(path, limit).entries


def _lines(file: BinaryIO) -> Iterator[bytes | None]:
    """Each line of a binary file; None for one longer than `MAX_LINE_BYTES`, which is skipped without keeping it."""
    while line := file.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = file.readline(MAX_LINE_BYTES + 1)
            yield None
        else:
            yield line


def _parse(line: bytes | None) -> dict[str, Any] | None:
    if line is None:
        return None
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return entry if isinstance(entry, dict) else None


def _attempt_key(entry: Mapping[str, Any]) -> tuple[str, ...]:
    attempt = entry.get("attempt")
    if isinstance(attempt, str) and attempt:
        return ("attempt", attempt)
    return ("item", str(entry.get("portal")), str(entry.get("entityTypeId")), str(entry.get("id")))


def print_journal(path: Path, *, limit: int, as_json: bool) -> int:
    """Print the journal's recent entries to stdout: a table, or the raw lines with `as_json`.

    Every cell of the table goes through `text.for_terminal` (titles capped at `TITLE_WIDTH`, other cells at 40
    characters), so nothing in the file can move the cursor, change colours or start a new row. An unfinished
    intent (see `Tail`) shows `UNFINISHED` in its EVENT cell, and a line under the table says to check the portal.
    Problems with the file itself go to stderr. Returns the exit status: 1 when the journal cannot be read.
    """
    try:
        tail = read_tail(path, limit)
    except OSError as exc:
        reason = for_terminal(_reason(exc))
        print(f"b24-mcp: the journal {for_terminal(str(path))} cannot be read: {reason}", file=sys.stderr)
        return 1
    return print_tail(tail, as_json=as_json, where=str(path))


def print_tail(tail: Tail, *, as_json: bool, where: str) -> int:
    """Print a journal's tail as `print_journal` does; `where` names the journal (a file, or the database)."""
    if tail.problem:
        print(
            f"b24-mcp: warning: deletions are refused with this journal: {for_terminal(tail.problem)}", file=sys.stderr
        )
    if tail.skipped:
        print(f"b24-mcp: {tail.skipped} line(s) of the journal are not entries and were skipped", file=sys.stderr)
    if as_json:
        for entry in tail.entries:
            print(safe_json(entry))
        return 0
    if not tail.entries:
        print(f"No journal entries in {for_terminal(where)}.")
    else:
        _print_table(tail)
    _print_unfinished(tail)
    return 0


def _print_table(tail: Tail) -> None:
    from b24_mcp.portal.items import display_name

    rows = [("TIME (UTC)", "EVENT", "TYPE", "ID", "TITLE")]
    for index, entry in enumerate(tail.entries):
        item = entry.get("item")
        title = for_terminal((display_name(item) if isinstance(item, dict) else None) or "", TITLE_WIDTH)
        if entry.get("error"):
            title = f"{title} [{_cell(entry['error'])}]".strip()
        event = _cell(entry.get("event", ""))
        if index in tail.unfinished:
            event += " " + _UNFINISHED
        rows.append(
            (_cell(entry.get("ts", "")), event, _cell(entry.get("entityTypeId", "")), _cell(entry.get("id", "")), title)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4])


def _print_unfinished(tail: Tail) -> None:
    if not tail.unfinished and not tail.unfinished_before:
        return
    shown = [tail.entries[index] for index in sorted(tail.unfinished)]
    if shown:
        items = ", ".join(
            f"type {_cell(entry.get('entityTypeId', ''))} id {_cell(entry.get('id', ''))}" for entry in shown[:_LISTED]
        )
        if len(shown) > _LISTED:
            items += f" and {len(shown) - _LISTED} more"
        print(
            f"{_UNFINISHED}: {len(shown)} deletion attempt(s) have an intent but no outcome: the server stopped "
            f"mid-deletion, or is deleting right now. Check the portal whether these items still exist: {items}."
        )
    if tail.unfinished_before:
        print(
            f"{_UNFINISHED}: {tail.unfinished_before} older attempt(s) have an intent but no outcome; "
            f"`b24-mcp journal -n {tail.reach}` shows them. Check the portal for them too."
        )


def _cell(value: object) -> str:
    return for_terminal(value if isinstance(value, str) else str(value), _CELL_WIDTH)
