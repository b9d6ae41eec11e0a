"""The audit journal: one JSON line per deletion event, with a full snapshot of what was deleted.

An `intent` line is written and fsynced before the portal is asked to delete, so a deletion that could not be
recorded never happens; the `deleted`, `error` (or, without an intent, `cancelled`) line that follows carries the
same `attempt` id. No secret is ever written to it.

The file, checked at every write (a file on disk is hostile until checked):
- It is opened with `O_NOFOLLOW`: a symbolic link in its place is refused, and its target is never touched.
- It must be a regular file owned by this user and neither readable nor writable by group or others: anything else
  is refused with `JOURNAL_UNWRITABLE` and a `chmod 600` hint, never silently tightened (the lines another user
  could have written are not ours to vouch for). A new journal is created with mode 0600, and every folder created
  for it with mode 0700. Folders above the file may be symbolic links (the user's choice of place).
- Lines are whole or absent: bytes are written until all are written; when a write fails part-way (a full disk),
  the file is truncated back to its last whole line, fsynced, and `JournalUnwritable` says how many of the entries
  asked for are on disk (`durable`). A file left without a final newline (by an older version or a crash) gets one
  before the next line, so that line cannot be glued to the fragment. Writers take an exclusive `flock` on the file,
  so two servers sharing a journal neither interleave nor truncate each other's lines.
Every line is `text.safe_json`: control, format and separator characters in the snapshot are `\\u` escapes, so
`tail` or `cat` of the journal cannot drive a terminal; JSON readers see the exact values.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread

from b24_mcp.journal.access import _open, _reason, _UnusableError
from b24_mcp.journal.record import Entry, JournalStore, JournalUnwritable, entry_record
from b24_mcp.secure.files import make_private_folder
from b24_mcp.telemetry import metrics
from b24_mcp.text import safe_json


def _line(entry: Entry) -> bytes:
    return (safe_json(entry_record(entry)) + "\n").encode()


class Journal(JournalStore):
    """Appends deletion events to a JSON Lines file (see the module docstring for the file's rules)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    async def unfinished(self) -> list[dict[str, Any]]:
        """The file's intents without an outcome (the whole file is read, in a thread)."""
        from b24_mcp.journal.reader import unfinished_intents  # only when asked: off the start-up path

        return await anyio.to_thread.run_sync(unfinished_intents, self.path)

    async def _take(self, entries: Sequence[Entry]) -> None:
        """Append `entries` in order, as whole lines, with one fsync at the end (a batch's intents together).

        Returns once every line is on disk. Otherwise raises `JournalUnwritable` whose `durable` is how many of
        `entries`, from the first, are whole lines on disk (fsynced); no part of any later entry is in the file.
        """
        if not entries:
            return
        lines = [_line(entry) for entry in entries]
        with metrics.journal_write("file"):
            await anyio.to_thread.run_sync(self._append, lines)

    async def problem(self) -> str | None:
        """Why a line could not be appended now (`check_journal`), or None."""
        return await anyio.to_thread.run_sync(check_journal, self.path, abandon_on_cancel=True)  # a hung disk

    def _append(self, lines: Sequence[bytes]) -> None:
        try:
            make_private_folder(self.path.parent)
            fd, _ = _open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)  # read: the last byte
        except _UnusableError as exc:
            raise self._refusal(str(exc), hint=exc.hint) from None
        except OSError as exc:
            raise self._refusal(_reason(exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._append_locked(fd, lines)
        except OSError as exc:
            raise self._refusal(_reason(exc)) from None
        finally:
            os.close(fd)  # releases the lock

    def _append_locked(self, fd: int, lines: Sequence[bytes]) -> None:
        end = os.fstat(fd).st_size
        if end and os.pread(fd, 1, end - 1) != b"\n":
            lines = [b"\n", *lines]  # ends the fragment; not an entry of ours, so not counted below
            skip = 1
        else:
            skip = 0
        data = b"".join(lines)
        boundaries = []  # the file size after each whole line
        size = end
        for line in lines:
            size += len(line)
            boundaries.append(size)
        written, failure = _write_all(fd, data)
        whole = bisect.bisect_right(boundaries, end + written)
        if failure is not None and end + written != (boundaries[whole - 1] if whole else end):
            # The cut-off line goes; should that fail too, the next write ends it with a newline.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, boundaries[whole - 1] if whole else end)
        try:
            os.fsync(fd)
        except OSError as exc:
            raise self._refusal(_reason(exc)) from None
        if failure is not None:
            raise self._refusal(_reason(failure), durable=max(whole - skip, 0))

    def _refusal(self, reason: str, *, durable: int = 0, hint: str | None = None) -> JournalUnwritable:
        return JournalUnwritable(
            f"The audit journal {self.path} cannot be written ({reason}); a deletion that cannot be recorded is "
            "not performed.",
            durable=durable,
            hint=hint or "Fix B24_AUDIT_LOG, the disk space or the permissions of the journal and its folder.",
        )


def check_journal(path: Path) -> str | None:
    """Why a deletion could not be journaled at `path` now, or None when it could (for `b24-mcp check`).

    Applies the same rules as writing, without creating or changing anything.
    """
    try:
        fd, _ = _open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        folder = next((parent for parent in path.parents if os.path.lexists(parent)), Path("/"))
        if not folder.is_dir():
            return f"{folder} is not a folder, so the journal's folder cannot be made"
        if os.access(folder, os.W_OK | os.X_OK):
            return None
        return f"permission denied: this user cannot create files in {folder}"
    except _UnusableError as exc:
        return f"{exc}. {exc.hint}"
    except OSError as exc:
        return _reason(exc)
    os.close(fd)
    return None


def _write_all(fd: int, data: bytes) -> tuple[int, OSError | None]:
    """Write `data` to `fd` until all of it is written: the bytes written, and the error that stopped it if any."""
    view = memoryview(data)
    written = 0
    while written < len(data):
        try:
            count = os.write(fd, view[written:])
        except OSError as exc:
            return written, exc
        if count <= 0:
            return written, OSError(errno.EIO, "the file took no bytes")
        written += count
    return written, None
