"""Where a request to the sign-in comes from: its source address, as each address's share is counted.

The source is the TCP peer. Behind a reverse proxy the peer is the proxy, so every person would share one address;
`B24_TRUSTED_PROXIES` lists the proxies (addresses or networks) whose `X-Forwarded-For` is believed: read from the
right (the entry the nearest proxy appended), each entry added by a trusted proxy is passed over, and the first one
that is not a trusted proxy's is the source. Without the setting no forwarded header is believed (anyone can send
one), and uvicorn is told not to believe them either. An IPv6 source counts as its /64, which one host holds whole.

`SourceCheck` (`guards`) puts each request's `Source` in a context variable; the provider reads it (`current_source`)
and marks it refused when the store says the address has used its share, and the guard then answers 429.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import Scope

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_FORWARDED_HOPS = 20  # X-Forwarded-For entries looked at; a longer chain is a header someone made up


@dataclass
class Source:
    """The source of the request being served (`key`: its address, an IPv6 one as its /64; None when unknown),
    and, once the store refused it, the seconds until it may try again."""

    key: str | None
    retry_after: int | None = None


_current: ContextVar[Source | None] = ContextVar("b24_mcp_signin_source", default=None)


def current_source() -> Source | None:
    """The `Source` of the request being served, when `SourceCheck` saw it."""
    return _current.get()


def serve_as(source: Source) -> None:
    """Make `source` the current request's (in the context of the task that serves it)."""
    _current.set(source)


def _address(text: str) -> Address | None:
    """An address as a peer or an X-Forwarded-For entry writes it (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def source_address(peer: str, forwarded: Iterable[str], trusted: Sequence[Network]) -> Address | None:
    """The source of a request from `peer` carrying `forwarded` (the X-Forwarded-For entries, left to right),
    believing only the proxies in `trusted` (see the module docstring)."""
    address = _address(peer)
    if address is None or not trusted:
        return address
    for entry in reversed(list(forwarded)[-MAX_FORWARDED_HOPS:]):
        if not any(address in network for network in trusted):
            break
        before = _address(entry)
        if before is None:
            break  # a malformed entry: the proxy that passed it on is the source
        address = before
    return address


def source_key(scope: Scope, trusted: Sequence[Network]) -> str | None:
    """The key a request's source is counted under: the address, an IPv6 one as its /64; None when unknown."""
    client = scope.get("client")
    if not client:
        return None
    forwarded: list[str] = []
    if trusted:
        for name, value in scope.get("headers", ()):
            if name.lower() == b"x-forwarded-for":
                forwarded += value.decode("latin-1").split(",")
    address = source_address(str(client[0]), forwarded, trusted)
    if address is None:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
