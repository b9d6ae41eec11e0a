"""Secrets at rest: the people store's key file, sealing (AES-256-GCM) and token digests.

- MCP tokens (access, refresh, authorization codes) and the sign-in states are stored as SHA-256 digests only:
  they are 256-bit random values, so the digest cannot be turned back, and a stolen database holds no usable token.
- Bitrix24 tokens and the client secrets minted at registration must be used again, so they are sealed with
  AES-256-GCM under a key kept in a file beside the database (`people.key`, 32 random bytes in hex, mode 0600,
  created on first use). Each sealed value is bound to its row and field (the associated data), so a value copied
  to another person's row does not open. A database copied without the key file (a backup, a debugging dump)
  reveals no Bitrix24 token; back the key file up apart from it.

The key file is hostile until checked like the other files of the state directory: never opened through a
symbolic link, used only when it is a regular file of this user that group and others can neither read nor write,
and created atomically (written under a random name, then linked into place), so two processes starting together
agree on one key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from b24_mcp.secure.files import Unfit, exclusive_temporary, make_private_folder, open_no_follow, unfit
from b24_mcp.secure.keys import KEY_BYTES

_NONCE_BYTES = 12
_PREFIX = "s1."
_MAX_KEY_FILE = 256


class UnusableFileError(Exception):
    """A file of the state directory that must not be used; the message says why and what to do."""


def digest(token: str) -> str:
    """The stored form of an MCP token, code or state: its SHA-256, in hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    """A fresh token of 256 random bits, recognisable by its prefix (for secret scanners and people)."""
    return prefix + secrets.token_urlsafe(32)


class Sealer:
    """Seals and opens short texts (tokens, secrets) with AES-256-GCM, each bound to a context (row and field)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("the key must be 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "Sealer()"

    def seal(self, text: str, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode(), context.encode())
        return _PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, context: str) -> str | None:
        """The text, or None when it does not open here (another key, another row, altered)."""
        if not sealed.startswith(_PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed[len(_PREFIX) :])
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, ValueError, binascii.Error):
            return None


def check_private_file(fd: int, path: Path) -> None:
    """Raise `UnusableFileError` unless the open file is a regular file of this user, private to it."""
    info = os.fstat(fd)
    problem = unfit(info)
    if problem is Unfit.NOT_REGULAR:
        raise UnusableFileError(f"{path} is not a regular file")
    if problem is Unfit.FOREIGN:
        raise UnusableFileError(f"{path} belongs to another user (uid {info.st_uid}); use a state folder of your own")
    mode = stat.S_IMODE(info.st_mode)
    if problem is Unfit.OPEN:
        raise UnusableFileError(
            f"other users may read or write {path} (mode {mode:04o}); if only this server wrote it, restrict it: "
            f"chmod 600 {path}"
        )


def open_private(path: Path, flags: int) -> int:
    """Open a file of the state directory without following a link, and check it (see `check_private_file`)."""
    try:
        fd = open_no_follow(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnusableFileError(f"{path} is a symbolic link; state files are never used through one") from None
        raise
    try:
        check_private_file(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def load_key(path: Path, *, create: bool = True) -> bytes:
    """The key in `path`; created (mode 0600, atomically) when missing and `create` is true.

    Raises `UnusableFileError` for a file that is not ours or not private, or does not hold a key, and
    `FileNotFoundError` when there is none and `create` is false.
    """
    for _ in range(3):  # a creation racing ours: read what won
        try:
            return _read_key(path)
        except FileNotFoundError:
            if not create:
                raise
        make_private_folder(path.parent)
        _create_key(path)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    fd = open_private(path, os.O_RDONLY)
    try:
        raw = os.read(fd, _MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise UnusableFileError(f"{path} does not hold a key of b24-mcp (64 hexadecimal digits)")
    return key


def _create_key(path: Path) -> None:
    temporary, fd = exclusive_temporary(path)
    try:
        try:
            os.write(fd, (secrets.token_bytes(KEY_BYTES).hex() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process created the key meanwhile: theirs is used
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
