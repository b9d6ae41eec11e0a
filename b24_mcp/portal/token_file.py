"""The token file (B24_TOKEN_FILE): read as hostile until checked, written private and whole (see `portal.auth`)."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from b24_mcp.portal.auth import is_token
from b24_mcp.secure.files import open_no_follow

logger = logging.getLogger(__name__)

_TOKEN_FILE_LIMIT = 64 * 1024


def read_token_file(path: Path, host: str) -> dict[str, Any] | None:
    """The tokens saved for `host`, or None when there are none usable (see the module's permission policy).

    The result has a non-empty `access_token` string, `refresh_token` a string or None, `user_id` an int or None.
    """
    try:
        fd = open_no_follow(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        # ELOOP: the name is a symbolic link, which is never followed.
        reason = "it is a symbolic link" if exc.errno == errno.ELOOP else (exc.strerror or type(exc).__name__)
        logger.warning("B24_TOKEN_FILE was not read (%s); using the configured tokens", reason)
        return None
    try:
        raw = _read_checked(fd)
    except OSError as exc:
        logger.warning(
            "B24_TOKEN_FILE was not read (%s); using the configured tokens", exc.strerror or type(exc).__name__
        )
        return None
    finally:
        os.close(fd)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        logger.warning("B24_TOKEN_FILE is not a token file of b24-mcp; using the configured tokens")
        return None
    if not isinstance(data, dict) or data.get("portal") != host or not is_token(data.get("access_token")):
        return None
    refresh = data.get("refresh_token")
    user_id = data.get("user_id")
    return {
        "portal": host,
        "access_token": data["access_token"],
        "refresh_token": refresh if is_token(refresh) else None,
        "user_id": user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None,
    }


def _read_checked(fd: int) -> bytes | None:
    """The contents of an open token file once it passed the checks; None (and one warning line) otherwise."""
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "it is not a regular file"
    elif info.st_uid != os.geteuid():
        problem = "it belongs to another user"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"other users may write it (mode {stat.S_IMODE(info.st_mode):04o}), so its tokens may not be ours"
    elif info.st_size > _TOKEN_FILE_LIMIT:
        problem = "it is too large"
    if problem is not None:
        logger.warning("B24_TOKEN_FILE was not read (%s); using the configured tokens", problem)
        return None
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        mode = stat.S_IMODE(info.st_mode)
        try:
            os.fchmod(fd, mode & 0o700)
            now = "it is now owner-only"
        except OSError:
            now = "it could not be made owner-only"
        logger.warning(
            "B24_TOKEN_FILE was readable by other users (mode %04o); %s. If others could have read it, "
            "re-authorise the application to replace its tokens.",
            mode,
            now,
        )
    chunks = []
    size = 0
    while chunk := os.read(fd, 16384):
        size += len(chunk)
        if size > _TOKEN_FILE_LIMIT:
            logger.warning("B24_TOKEN_FILE was not read (it is too large); using the configured tokens")
            return None
        chunks.append(chunk)
    return b"".join(chunks)
