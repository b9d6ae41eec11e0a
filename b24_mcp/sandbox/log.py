"""The portal's request log: one ``Call`` per answered request (and per batch sub-command), last N kept."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

__all__ = ["DEFAULT_LOG_LIMIT", "Call", "CallLog"]

# About 0.5 KiB a call: the last 10,000 calls cost a few MiB at most, however long a `--sandbox` server runs.
DEFAULT_LOG_LIMIT = 10_000


@dataclass
class Call:
    """One entry of the request log."""

    method: str
    params: dict[str, Any]
    user_id: int | None
    status: int
    error: str | None
    via_batch: bool = False
    dropped: bool = False


class CallLog(Sequence[Call]):
    """The last ``limit`` calls, oldest first (``limit=None``: all of them).

    Reads like the list it used to be: indexing, slicing (a list), ``len``, iteration, ``clear()``, and equality
    with a list of calls. ``recorded`` counts every call ever appended, so ``since(mark)`` finds the calls made
    after ``mark = log.recorded`` even once older ones have been dropped.

    Safe to read from another thread while a server thread appends: every read works on a snapshot (copying a
    deque is one C call under the GIL; iterating it in Python while it grows would raise).
    """

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by content

    def __init__(self, limit: int | None = DEFAULT_LOG_LIMIT) -> None:
        if limit is not None and limit < 1:
            raise ValueError("the request log must keep at least one call")
        # (sequence number, call): the number lets `since` find its place even after older calls were dropped.
        self._entries: deque[tuple[int, Call]] = deque(maxlen=limit)
        self.recorded = 0

    @property
    def limit(self) -> int | None:
        return self._entries.maxlen

    def append(self, call: Call) -> None:
        self._entries.append((self.recorded, call))
        self.recorded += 1

    def clear(self) -> None:
        """Forget the kept calls (``recorded`` keeps counting)."""
        self._entries.clear()

    def snapshot(self) -> list[Call]:
        """The kept calls, oldest first, as a list of their own."""
        return [call for _, call in list(self._entries)]

    def to(self, method: str) -> list[Call]:
        """The kept calls of one (already normalized) method name."""
        return [call for call in self.snapshot() if call.method == method]

    def since(self, mark: int) -> list[Call]:
        """The kept calls appended after ``recorded`` was ``mark``."""
        return [call for number, call in list(self._entries) if number >= mark]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Call]:
        return iter(self.snapshot())

    @overload
    def __getitem__(self, index: int) -> Call: ...

    @overload
    def __getitem__(self, index: slice) -> list[Call]: ...

    def __getitem__(self, index: int | slice) -> Call | list[Call]:
        if isinstance(index, slice):
            return self.snapshot()[index]
        return self._entries[index][1]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (CallLog, list, tuple)):
            return self.snapshot() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"CallLog({self.snapshot()!r}, limit={self.limit})"
