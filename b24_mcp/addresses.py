"""Addresses in the settings: portal and server URLs checked and normalised, host names, loopback.

Every check raises `ValueError` with a message that never contains the URL (a webhook URL holds its secret).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import SplitResult, urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})  # the names an http:// URL of this machine may use
_NOT_A_PORTAL = "is not a portal address; expected https://<portal> (e.g. https://acme.bitrix24.com)"
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def is_host_name(host: str) -> bool:
    """Whether `host` (without brackets or port) is an IP address or a DNS name an HTTP client can connect to."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()  # a portal may have an internationalised name
    except UnicodeError:
        return False
    labels = ascii_host.removesuffix(".").split(".")
    if len(ascii_host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return False
    return not all(label.isdigit() for label in labels)  # 1.2.3.999 is neither a name nor an IPv4 address


def split_url(url: str, problem: str) -> SplitResult:
    """`urlsplit`, with its `ValueError`s (a bad IPv6 literal, a port of 99999) turned into `problem`."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if not parts.hostname or not is_host_name(parts.hostname) or port == 0 or parts.netloc.endswith(":"):
        raise ValueError(problem)
    return parts


def parse_portal_url(url: str, *, allow_http: bool) -> tuple[str, str]:
    """`https://acme.bitrix24.com`, with or without a trailing slash or `/rest/`, as (scheme, host)."""
    parts = split_url(url, _NOT_A_PORTAL)
    if parts.scheme not in ("https", "http") or parts.query or parts.fragment or parts.username:
        raise ValueError(_NOT_A_PORTAL)
    if parts.path.rstrip("/") not in ("", "/rest"):
        raise ValueError(_NOT_A_PORTAL)
    if parts.scheme == "http" and not allow_http:
        raise ValueError("uses http://; use https:// (or set B24_ALLOW_HTTP=true for a portal on a trusted network)")
    return parts.scheme, parts.netloc.lower()


def is_loopback_host(host: str) -> bool:
    """Whether `host` (a name or an address, without brackets) is this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_host_entry(entry: str) -> str:
    """One `B24_MCP_ALLOWED_HOSTS` entry, normalised: `host[:port]` (a Host header) or `scheme://host[:port]`."""
    problem = f"has {entry!r}, which is neither host[:port] nor an origin like https://host[:port]"
    scheme, separator, _ = entry.partition("://")
    parts = split_url(entry if separator else f"//{entry}", problem)
    if separator and scheme.lower() not in ("http", "https"):
        raise ValueError(problem)
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(problem)
    netloc = parts.netloc.lower()
    return f"{scheme.lower()}://{netloc}" if separator else netloc


def public_origin(url: str) -> str:
    """`B24_PUBLIC_URL` as the issuer of sign-in: `scheme://host[:port]`, lower-case, without a default port."""
    problem = "is not where MCP clients reach this server; expected https://<host>[:port], without a path"
    parts = split_url(url, problem)
    if parts.scheme not in ("https", "http") or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(problem)
    if parts.username is not None or parts.password is not None:
        raise ValueError(problem)
    host = (parts.hostname or "").lower()
    if parts.scheme == "http" and host not in LOOPBACK_NAMES:
        raise ValueError(
            "uses http:// for a host other than localhost, 127.0.0.1 or [::1]: sign-in tokens would travel in clear "
            "text; use https:// (terminate TLS at a reverse proxy)"
        )
    port = parts.port
    default = 443 if parts.scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port is not None and port != default else "")
