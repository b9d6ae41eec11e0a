"""Private files, written once: folders of mode 0700, files opened without following a link and checked to be a
regular file of this user that no one else may read or write, and whole files replaced through an exclusive
temporary file beside them. The journal, the token file and the key file use these; each words its own refusals.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from enum import Enum
from pathlib import Path

NO_FOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a FIFO put in the file's place cannot hang us


class Unfit(Enum):
    """Why an open file is not a private file of this user."""

    NOT_REGULAR = "not a regular file"
    FOREIGN = "another user's"
    OPEN = "open to other users"


def make_private_folder(folder: Path) -> None:
    """Create `folder` and its missing parents with mode 0700."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for each in reversed(missing):
        with contextlib.suppress(FileExistsError):  # created meanwhile; opening the file tells if it is a folder
            os.mkdir(each, 0o700)


def open_no_follow(path: Path, flags: int) -> int:
    """`os.open` that never follows a symbolic link at `path` (ELOOP) and creates files with mode 0600."""
    return os.open(path, flags | NO_FOLLOW, 0o600)


def unfit(status: os.stat_result) -> Unfit | None:
    """What makes a file with this status unfit to be private to this user, if anything (checked in this order)."""
    if not stat.S_ISREG(status.st_mode):
        return Unfit.NOT_REGULAR
    if status.st_uid != os.geteuid():
        return Unfit.FOREIGN
    if stat.S_IMODE(status.st_mode) & 0o077:
        return Unfit.OPEN
    return None


def exclusive_temporary(path: Path) -> tuple[Path, int]:
    """A new file beside `path` under a random name, created exclusively (mode 0600, no link followed)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    return temporary, os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def write_private_file(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`, readable by the owner only.

    The data goes to a new file with a random name created exclusively without following links, which is then
    renamed over `path` (a link at `path` is replaced, never followed).
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary, fd = exclusive_temporary(path)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    sync_directory(path.parent)


def sync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
