"""Helpers the tests share: reading the journal, running the command or serving with it, building the application,
secrets."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import anyio
import httpx2
import uvicorn
from mcp import Client

from b24_mcp.app import build_app
from b24_mcp.deleting.app import App
from b24_mcp.deleting.item import ItemDeletion
from b24_mcp.sandbox.seed import SANDBOX_WEBHOOK_CODE
from b24_mcp.serving.tools import build_server
from b24_mcp.serving.transport import REQUEST_READ_SECONDS, http_app, http_config, http_options
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


def webhook_env(webhook_url: str, tls: TLSFiles, journal: Path) -> dict[str, str]:
    """The B24_* variables of a `b24-mcp` that reaches the emulator at `webhook_url` over HTTPS and journals to
    `journal`."""
    return {"B24_WEBHOOK_URL": webhook_url, "B24_CA_BUNDLE": str(tls.ca_bundle), "B24_AUDIT_LOG": str(journal)}


def b24_environment(env: dict[str, str] | None) -> dict[str, str]:
    """This process's environment without its B24_* variables, with `env`'s."""
    return {name: value for name, value in os.environ.items() if not name.startswith("B24_")} | (env or {})


# `run_b24` forks its processes from a server that has imported the command's libraries once (a fresh interpreter
# spends most of a second on imports, for dozens of commands a run): each command is still a process of its own,
# with its own environment, working folder, standard streams and exit status.
_COMMANDS = multiprocessing.get_context("forkserver")
_COMMANDS.set_forkserver_preload(["b24_mcp.commands.cli", "b24_mcp.app", "b24_mcp.serving.tools", "httpx2"])


def run_b24(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `b24-mcp` command as a user would: a process of its own, no B24_* variable but those given, stdin
    empty, in the temporary folder; its exit status and what it wrote to stdout and stderr."""
    with tempfile.TemporaryDirectory() as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        command = _COMMANDS.Process(target=_command, args=(list(args), b24_environment(env), str(out), str(err)))
        command.start()
        command.join(120)
        if command.exitcode is None:
            command.kill()
            command.join()
            raise subprocess.TimeoutExpired(["b24-mcp", *args], 120)
        return subprocess.CompletedProcess(
            ["b24-mcp", *args], command.exitcode, out.read_text(errors="replace"), err.read_text(errors="replace")
        )


def _command(args: list[str], env: dict[str, str], out: str, err: str) -> None:
    """In the forked process: `b24-mcp args` with `env`, stdin empty, stdout and stderr to the files named."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(tempfile.gettempdir())
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, out, os.O_WRONLY | os.O_CREAT),
        (2, err, os.O_WRONLY | os.O_CREAT),
    ):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    from b24_mcp.commands.cli import main

    try:
        status = main(args)
    except SystemExit as exit:  # argparse's usage errors and --version, as the console script would end
        status = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        if isinstance(exit.code, str):
            print(exit.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def url_host(host: str) -> str:
    """`host` as a URL spells it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


class Served(NamedTuple):
    """A running `b24-mcp --transport http`: its /mcp URL, the process, and the file its stderr goes to."""

    url: str
    process: subprocess.Popen[str]
    log: Path

    def stop(self) -> str:
        """Stop the server (SIGTERM; SIGKILL and fail when it is still running 20 s later) and return all it wrote to
        stderr. Stopping a stopped server only reads its stderr."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"b24-mcp outlived SIGTERM; its stderr ends:\n{self.stderr_tail()}") from None
        return self.log.read_text()

    def stderr_tail(self, size: int = 4000) -> str:
        return self.log.read_text()[-size:]

    def wait_listening(self, timeout: float = 20) -> None:
        """Wait until the server accepts connections; fail with the end of its stderr when it exits first or is not
        listening after `timeout` seconds."""
        address = urlsplit(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((address.hostname, address.port), timeout=0.2).close()
                return
            except OSError:
                pass
            if self.process.poll() is not None:
                problem = f"exited with code {self.process.returncode}"
            elif time.monotonic() > deadline:
                problem = f"was not listening after {timeout:g} s"
            else:
                time.sleep(0.05)
                continue
            raise AssertionError(f"b24-mcp {problem}; its stderr ends:\n{self.stderr_tail()}")


@contextmanager
def http_server(
    env: dict[str, str],
    *args: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_folder: Path | None = None,
    python_args: Sequence[str] = ("-m", "b24_mcp"),
    wait: bool = True,
) -> Iterator[Served]:
    """`b24-mcp --transport http [args]` on `port` (a free one by default) of a loopback `host`, with no B24_*
    variable but `env`'s, listening (with `wait=False` just started: see `Served.wait_listening`) until the block
    ends, then stopped.

    `python_args` are the interpreter's arguments that run `b24-mcp`. Its stderr goes to a file in `log_folder` (a
    temporary folder by default): a pipe nobody reads while the test runs would stop the server once full."""
    port = port or free_port(host)
    with ExitStack() as stack:
        folder = log_folder or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / f"stderr-{time.monotonic_ns()}.txt"
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [sys.executable, *python_args, "--transport", "http", "--host", host, "--port", str(port), *args],
                env=b24_environment(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
                cwd=tempfile.gettempdir(),
            )
        served = Served(f"http://{url_host(host)}:{port}/mcp", process, log)
        stack.callback(served.stop)
        if wait:
            served.wait_listening()
        yield served


Connect = Callable[..., AbstractAsyncContextManager[Client]]
"""The `connect` fixture: `async with connect(confirm="auto", client={...}) as client`."""


@asynccontextmanager
async def serving_http(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    stateless: bool = False,
    read_seconds: float = REQUEST_READ_SECONDS,
) -> AsyncIterator[str]:
    """The app `b24-mcp --transport http` serves, assembled as the command does (HTTP options; with B24_PUBLIC_URL
    the sign-in application, its options and routes; the ASGI app behind the token and the Host/Origin check;
    uvicorn with the guarded protocol), served in this event loop on `port` (a free one by default) of a loopback
    `host` until the block ends; yields its /mcp URL. No process: what only a process shows (signals, the
    open-files limit, stderr) is `http_server`'s."""
    port = port or free_port(host)
    options = http_options(settings, host, port)
    if settings.public_url is None:
        app = make_app(settings)
        server = build_server(app, server_options=options)
    else:
        from b24_mcp.app import build_signin_app

        app, people = build_signin_app(settings)
        server = build_server(app, server_options=options | people.server_options())
        people.add_routes(server)
    asgi = http_app(server, settings, host=host, port=port, stateless=stateless, journal=app.journal)
    served = uvicorn.Server(http_config(asgi, host=host, port=port, read_seconds=read_seconds))
    async with anyio.create_task_group() as group:
        group.start_soon(served.serve)
        for _ in range(4000):  # 20 s
            if served.started:
                break
            await anyio.sleep(0.005)
        else:
            raise AssertionError("the server did not start within 20 s")
        try:
            yield f"http://{url_host(host)}:{port}/mcp"
        finally:
            served.should_exit = True
