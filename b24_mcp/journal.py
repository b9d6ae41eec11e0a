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
import logging
import os
import secrets
import stat
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.to_thread

from b24_mcp.errors import Refusal
from b24_mcp.gate import ConfirmedBy
from b24_mcp.text import safe_json

logger = logging.getLogger(__name__)

Event = Literal["intent", "deleted", "error", "cancelled"]

OUTCOMES = frozenset({"deleted", "error"})
MAX_KEPT = 10_000  # refused outcomes kept in memory (each holds its item's snapshot)
RETRY_SECONDS = 5.0


def new_attempt_id() -> str:
    """A fresh attempt id: 16 random hex digits."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Attempt:
    """One deletion attempt as the journal records it: what, how confirmed, and the full item snapshot.

    `attempt_id` (the `attempt` field of each line) is shared by the attempt's intent and outcome lines.
    """

    portal: str
    user_id: int | None
    entity_type_id: int
    item_id: int
    confirmation: ConfirmedBy
    item: Mapping[str, Any] | None
    attempt_id: str = field(default_factory=new_attempt_id)
    user_name: str | None = None  # the signed-in person who asked (sign-in); `user_id` is theirs then


@dataclass(frozen=True)
class Entry:
    """One line of the journal: an event of an attempt, with the error or a note where there is one."""

    event: Event
    attempt: Attempt
    error: str | None = None
    error_description: str | None = None
    note: str | None = None
    ts: str | None = None  # when it happened, for an entry written late (kept while the journal refused it)


class JournalUnwritable(Refusal):
    """`JOURNAL_UNWRITABLE`: the journal did not take every line asked for.

    `durable` counts the entries, from the first one passed to `write_many`, whose whole lines are written and
    fsynced; the others are not in the file at all (no cut-off line is left). The deletion code may send exactly
    the items whose intent is among the first `durable` entries, and must report `JOURNAL_UNWRITABLE` for the rest.
    """

    def __init__(self, description: str, *, durable: int = 0, hint: str | None = None) -> None:
        super().__init__("JOURNAL_UNWRITABLE", description, hint=hint)
        self.durable = durable


class _UnusableError(Exception):
    """The journal file is there but must not be used; `str()` says why, `hint` what to do."""

    def __init__(self, reason: str, hint: str, *, readable: bool = False) -> None:
        super().__init__(reason)
        self.hint = hint
        # Whether its lines can still be shown (with a warning): a file of another owner or too open a mode.
        self.readable = readable


def now() -> str:
    """The journal's timestamp for this moment: UTC, milliseconds, `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def entry_record(entry: Entry) -> dict[str, Any]:
    """The JSON object the journal keeps of `entry`: a line of the file, the `entry` of a table row."""
    attempt = entry.attempt
    record: dict[str, Any] = {
        "ts": entry.ts or now(),
        "event": entry.event,
        "attempt": attempt.attempt_id,
        "portal": attempt.portal,
        "userId": attempt.user_id,
        **({"userName": attempt.user_name} if attempt.user_name is not None else {}),
        "entityTypeId": attempt.entity_type_id,
        "id": attempt.item_id,
        "confirmation": attempt.confirmation,
        # The complete snapshot, once per line: it is what recreating the item by hand needs.
        "item": dict(attempt.item) if attempt.item is not None else None,
    }
    if entry.error is not None:
        record["error"] = entry.error
        record["error_description"] = entry.error_description
    if entry.note is not None:
        record["note"] = entry.note
    return record


def _line(entry: Entry) -> bytes:
    return (safe_json(entry_record(entry)) + "\n").encode()


class JournalStore(ABC):
    """Where deletion events are recorded: a file (`Journal`), or a table shared by replicas
    (`shared.journal.TableJournal`). Both take every entry durably before returning, or raise `JournalUnwritable`
    with `durable` counting the entries, from the first, that were taken.

    An outcome the journal refuses (its intent is written, the portal acted: a full disk, a database outage) is not
    lost: `write_outcomes` keeps it in memory (at most `MAX_KEPT`, the oldest dropped first), and it is written
    before the next entries and every `retry_every` seconds while `tend` runs (the server's lifetime), with the time
    it happened. Only a process that ends first loses it: `b24-mcp journal reconcile` then settles its intent.
    """

    retry_every: float = RETRY_SECONDS

    def __init__(self) -> None:
        self._kept: deque[Entry] = deque()
        self._writing = 0  # kept outcomes being written right now

    @property
    def kept(self) -> int:
        """How many refused outcomes wait to be written (or are being written)."""
        return len(self._kept) + self._writing

    async def write(
        self,
        event: Event,
        attempt: Attempt,
        *,
        error: str | None = None,
        error_description: str | None = None,
        note: str | None = None,
    ) -> None:
        """Record one event durably; `JournalUnwritable` (a `Refusal`, `JOURNAL_UNWRITABLE`) when it is not taken."""
        await self.write_many([Entry(event, attempt, error, error_description, note)])

    async def write_many(self, entries: Sequence[Entry]) -> None:
        """Record `entries` in order, durably (kept outcomes first); see the class docstring for a failure."""
        if self._kept:
            await self.write_kept()
        await self._take(entries)

    async def write_outcomes(self, entries: Sequence[Entry]) -> JournalUnwritable | None:
        """Record the outcomes of attempts whose intents are written; what the journal refuses is kept and written
        later (see the class docstring). Returns the refusal, or None when all were written now."""
        try:
            await self.write_many(entries)
        except JournalUnwritable as exc:
            self._keep([replace(entry, ts=entry.ts or now()) for entry in entries[exc.durable :]])
            return exc
        return None

    async def write_kept(self) -> bool:
        """Write the kept outcomes now; True when none is left."""
        if not self._kept:
            return True
        entries = list(self._kept)
        self._kept.clear()  # a concurrent call writes only what is kept after this point
        self._writing += len(entries)
        try:
            with anyio.CancelScope(shield=True):  # taken out of the deque: written, or put back
                await self._take(entries)
        except JournalUnwritable as exc:
            self._kept.extendleft(reversed(entries[exc.durable :]))
            self._bound()
            return False
        finally:
            self._writing -= len(entries)
        logger.warning("The journal takes writes again: %d outcome(s) kept meanwhile are written", len(entries))
        return True

    async def tend(self) -> None:
        """For the server's lifetime: say once in the log when unfinished intents wait, then write kept outcomes as
        soon as the journal takes them. Never raises."""
        try:
            unfinished = len(await self.unfinished())
        except Exception as exc:  # a journal that cannot be read now says so at the first deletion
            logger.debug("The journal's unfinished intents could not be counted: %s", exc)
            unfinished = 0
        if unfinished:
            logger.warning(
                "The journal has %d deletion attempt(s) with an intent but no outcome (a crash or an outage left "
                "them open, or another replica is deleting right now): `b24-mcp journal reconcile` settles them by "
                "reading the portal",
                unfinished,
            )
        while True:
            await anyio.sleep(self.retry_every)
            if self._kept:
                try:
                    await self.write_kept()
                except Exception as exc:  # the next round tries again
                    logger.debug("Writing the kept outcomes failed: %s", exc)

    async def last_try(self) -> None:
        """When the server stops: write the kept outcomes once more; the log says how many are lost otherwise."""
        if self._kept and not await self.write_kept():
            logger.error(
                "%d outcome(s) the journal refused are lost as this server stops: `b24-mcp journal reconcile` settles "
                "their intents by reading the portal",
                self.kept,
            )

    def _keep(self, entries: Sequence[Entry]) -> None:
        if entries:
            logger.error(
                "The journal refused %d outcome(s) of deletion attempts whose intents it holds; they are kept in "
                "memory and written as soon as it takes writes again",
                len(entries),
            )
        self._kept.extend(entries)
        self._bound()

    def _bound(self) -> None:
        dropped = [self._kept.popleft().attempt.attempt_id for _ in range(len(self._kept) - MAX_KEPT)]
        if dropped:
            logger.error(
                "%d outcome(s) the journal refused were dropped (more than %d kept): their intents stay unfinished "
                "until `b24-mcp journal reconcile` settles them",
                len(dropped),
                MAX_KEPT,
            )

    @abstractmethod
    async def _take(self, entries: Sequence[Entry]) -> None:
        """Record `entries` in order, durably; see the class docstring for a failure."""

    @abstractmethod
    async def unfinished(self) -> list[dict[str, Any]]:
        """The intents without an outcome, oldest first, as the journal keeps them (JSON objects)."""


class Journal(JournalStore):
    """Appends deletion events to a JSON Lines file (see the module docstring for the file's rules)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    async def unfinished(self) -> list[dict[str, Any]]:
        """The file's intents without an outcome (the whole file is read, in a thread)."""
        from b24_mcp.journal_reader import unfinished_intents  # only when asked: off the start-up path

        return await anyio.to_thread.run_sync(unfinished_intents, self.path)

    async def _take(self, entries: Sequence[Entry]) -> None:
        """Append `entries` in order, as whole lines, with one fsync at the end (a batch's intents together).

        Returns once every line is on disk. Otherwise raises `JournalUnwritable` whose `durable` is how many of
        `entries`, from the first, are whole lines on disk (fsynced); no part of any later entry is in the file.
        """
        if not entries:
            return
        lines = [_line(entry) for entry in entries]
        await anyio.to_thread.run_sync(self._append, lines)

    def _append(self, lines: Sequence[bytes]) -> None:
        try:
            _make_folder(self.path.parent)
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
        if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
            return None
        return f"{folder} does not take a new journal"
    except _UnusableError as exc:
        return f"{exc}. {exc.hint}"
    except OSError as exc:
        return _reason(exc)
    os.close(fd)
    return None


def _make_folder(folder: Path) -> None:
    """Create `folder` and any missing parent, each with mode 0700."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created meanwhile; opening the journal tells if it is a folder
            os.mkdir(each, 0o700)


def _open(path: Path, flags: int, *, strict: bool = True) -> tuple[int, _UnusableError | None]:
    """Open the journal without following a symbolic link and check what was opened.

    Raises `_UnusableError` for a file the journal must not use; with `strict` false, a file that is only someone
    else's or too open is returned with its problem instead.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _UnusableError(
                "it is a symbolic link, and the journal is never written through one",
                "Point B24_AUDIT_LOG at the file itself.",
            ) from None
        if exc.errno == errno.ENXIO:
            raise _UnusableError("it is not a regular file", "Point B24_AUDIT_LOG at a regular file.") from None
        raise
    try:
        problem = _problem(os.fstat(fd), path)
    except BaseException:
        os.close(fd)
        raise
    if problem is not None and (strict or not problem.readable):
        os.close(fd)
        raise problem
    return fd, problem


def _problem(status: os.stat_result, path: Path) -> _UnusableError | None:
    if not stat.S_ISREG(status.st_mode):
        return _UnusableError("it is not a regular file", "Point B24_AUDIT_LOG at a regular file.")
    if status.st_uid != os.geteuid():
        return _UnusableError(
            f"it belongs to another user (uid {status.st_uid})",
            "Use a journal of your own (B24_AUDIT_LOG).",
            readable=True,
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o077:
        return _UnusableError(
            f"other users may read or write it: mode {mode:04o}",
            f"If all its lines are the server's, restrict it: chmod 600 {path}",
            readable=True,
        )
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


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
