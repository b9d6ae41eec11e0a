"""Helpers the tests share: reading the journal, running the command, building the application, secrets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client

from b24_mcp.app import App, build_app
from b24_mcp.deletion import ItemDeletion
from b24_mcp.sandbox.seed import SANDBOX_WEBHOOK_CODE
from b24_mcp.settings import OAuthConfig, Settings, Webhook

SECRETS = (SANDBOX_WEBHOOK_CODE,)


@dataclass(frozen=True)
class TLSFiles:
    """A test certificate authority and a server certificate for 127.0.0.1 and localhost."""

    ca_bundle: Path
    certfile: Path
    keyfile: Path


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every journal line, parsed; empty when there is no journal."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def journal_events(path: Path) -> list[str]:
    """The journal's events in order."""
    return [entry["event"] for entry in read_journal(path)]


def make_app(
    settings: Settings,
    credentials: Webhook | OAuthConfig | None = None,
    http_transport: httpx2.AsyncBaseTransport | None = None,
    *,
    retry_base: float = 0.01,
) -> App:
    """The application with fast retries."""
    return build_app(settings, credentials, http_transport=http_transport, retry_base=retry_base)


def item_deletion(
    settings: Settings,
    credentials: Webhook | OAuthConfig | None = None,
    http_transport: httpx2.AsyncBaseTransport | None = None,
    *,
    retry_base: float = 0.01,
) -> ItemDeletion:
    """Single-item deletion over a fresh application with fast retries."""
    return ItemDeletion(make_app(settings, credentials, http_transport, retry_base=retry_base))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` (a loopback address) just now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def run_b24(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `b24-mcp` command as a user would: a fresh process, no B24_* variable but those given."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("B24_")}
    return subprocess.run(
        [sys.executable, "-m", "b24_mcp", *args],
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
    )


Connect = Callable[..., AbstractAsyncContextManager[Client]]
"""The `connect` fixture: `async with connect(confirm="auto", client={...}) as client`."""
