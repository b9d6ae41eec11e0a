"""The journal file opened safely: never through a symbolic link, checked to be a regular, private file of this
user; the refusals worded for B24_AUDIT_LOG (`file` writes it, `reader` reads it)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from b24_mcp.secure.files import Unfit, open_no_follow, unfit


class _UnusableError(Exception):
    """The journal file is there but must not be used; `str()` says why, `hint` what to do."""

    def __init__(self, reason: str, hint: str, *, readable: bool = False) -> None:
        super().__init__(reason)
        self.hint = hint
        # Whether its lines can still be shown (with a warning): a file of another owner or too open a mode.
        self.readable = readable


def _open(path: Path, flags: int, *, strict: bool = True) -> tuple[int, _UnusableError | None]:
    """Open the journal without following a symbolic link and check what was opened.

    Raises `_UnusableError` for a file the journal must not use; with `strict` false, a file that is only someone
    else's or too open is returned with its problem instead.
    """
    try:
        fd = open_no_follow(path, flags)
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
    problem = unfit(status)
    if problem is Unfit.NOT_REGULAR:
        return _UnusableError("it is not a regular file", "Point B24_AUDIT_LOG at a regular file.")
    if problem is Unfit.FOREIGN:
        return _UnusableError(
            f"it belongs to another user (uid {status.st_uid})",
            "Use a journal of your own (B24_AUDIT_LOG).",
            readable=True,
        )
    mode = stat.S_IMODE(status.st_mode)
    if problem is Unfit.OPEN:
        return _UnusableError(
            f"other users may read or write it: mode {mode:04o}",
            f"If all its lines are the server's, restrict it: chmod 600 {path}",
            readable=True,
        )
    return None


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


# Reading
