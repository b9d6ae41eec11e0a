"""The env file named on purpose (`--env-file PATH`, or `B24_ENV_FILE`): checked before the settings read it."""

from __future__ import annotations

import os
import stat
from collections.abc import Container, Mapping

from b24_mcp.errors import SettingsError

ENV_PREFIX = "B24_"
ENV_FILE_VARIABLE = "B24_ENV_FILE"
MAX_ENV_FILE_BYTES = 1 << 20


def _b24_values(pairs: Mapping[str, str | None], fields: Container[str]) -> dict[str, str]:
    """`B24_*` names (any case) as field names, empty values left out (as if unset)."""
    prefix = len(ENV_PREFIX)
    return {
        name[prefix:].lower(): value
        for name, value in pairs.items()
        if name.upper().startswith(ENV_PREFIX) and name[prefix:].lower() in fields and value
    }


def read_env_file(path: str | os.PathLike[str], fields: Container[str]) -> dict[str, str]:
    """The `B24_*` values of an env file (dotenv syntax) that name one of `fields`; `SettingsError`, one line
    naming the file, if unusable."""
    return _b24_values(_read_pairs(path), fields)


def env_file_names(path: str | os.PathLike[str]) -> set[str]:
    """Every name an env file sets (none when it cannot be read: loading the settings says why)."""
    try:
        return set(_read_pairs(path))
    except SettingsError:
        return set()


def _read_pairs(path: str | os.PathLike[str]) -> dict[str, str | None]:
    shown = repr(os.fspath(path))

    def refuse(problem: str) -> SettingsError:
        return SettingsError([f"the env file {shown} {problem}"])

    try:
        # O_NONBLOCK: a FIFO put in its place must not hang the start; regular files are unaffected.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise refuse("does not exist") from None
    except PermissionError:
        raise refuse("cannot be read: permission denied") from None
    except (OSError, ValueError) as exc:
        raise refuse(f"cannot be read: {getattr(exc, 'strerror', None) or 'not a usable path'}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise refuse("is not a regular file")
    with os.fdopen(descriptor, "rb") as file:
        try:
            data = file.read(MAX_ENV_FILE_BYTES + 1)
        except OSError as exc:
            raise refuse(f"cannot be read: {exc.strerror or 'input/output error'}") from None
    if len(data) > MAX_ENV_FILE_BYTES:
        raise refuse(f"is larger than {MAX_ENV_FILE_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise refuse(f"is not UTF-8 text (byte {exc.start})") from None
    import io  # the dotenv parser only when a file is named

    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    for binding in parse_stream(io.StringIO(text)):
        if binding.error:  # the line itself may hold a secret: only its number is shown
            raise refuse(f"has a line {binding.original.line} that is not NAME=value")
    return dotenv_values(stream=io.StringIO(text))
