"""The portal client against a hostile portal: a raw TLS server on loopback that trickles bytes, never finishes
its handshake, sends a 200 MB body or a gzip bomb. Each call ends in bounded time with a bounded amount of memory,
as a `TransportError` the callers' lost-answer reconciliation understands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest

from b24_mcp.errors import TransportError
from b24_mcp.portal.auth import WebhookAuth
from b24_mcp.portal.client import DEFAULT_MAX_ANSWER_BYTES, PortalClient
from b24_mcp.sandbox.seed import SANDBOX_USER_ID, SANDBOX_WEBHOOK_CODE
from b24_mcp.settings import parse_webhook_url
from helpers import TLSFiles

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
Respond = Callable[[asyncio.StreamWriter], Awaitable[None]]


class HostilePortal:
    """Where the server listens, and how many requests reached it whole (head and body)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.requests = 0

    @property
    def webhook_url(self) -> str:
        return f"{self.origin}/rest/{SANDBOX_USER_ID}/{SANDBOX_WEBHOOK_CODE}/"


@asynccontextmanager
async def hostile_portal(tls: TLSFiles, respond: Respond, *, handshake: bool = True) -> AsyncIterator[HostilePortal]:
    """A TLS server on 127.0.0.1 that reads each request and answers with `respond` (without TLS when
    `handshake` is false: it accepts connections and never speaks)."""
    handlers: set[asyncio.Task[None]] = set()
    portal: HostilePortal

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            if not handshake:
                await asyncio.sleep(3600)  # cancelled when the test ends
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            portal.requests += 1
            await respond(writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # stopped at the end of the test: end normally (asyncio logs a cancelled connection callback)
        finally:
            writer.transport.abort()
            handlers.discard(task)

    context = None
    if handshake:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(tls.certfile), str(tls.keyfile))
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    portal = HostilePortal(f"https://127.0.0.1:{port}")
    try:
        yield portal
    finally:
        server.close()
        running = list(handlers)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)


def head(content_length: int, *extra: str) -> bytes:
    lines = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {content_length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# A byte every TRICKLE seconds: no single read waits as long as TIMEOUT, yet the whole answer never arrives within it.
TRICKLE = 0.2
TIMEOUT = 0.8


async def trickle(data: bytes, writer: asyncio.StreamWriter, every: float = TRICKLE) -> None:
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(every)


async def trickle_body(writer: asyncio.StreamWriter) -> None:
    body = b'{"result": {"item": {"id": 42, "title": "' + b"x" * 1000 + b'"}}}'
    writer.write(head(len(body)))
    await trickle(body, writer)


async def trickle_head(writer: asyncio.StreamWriter) -> None:
    await trickle(head(20), writer)


def client_for(url: str, tls: TLSFiles, *, timeout: float, max_retries: int = 0) -> PortalClient:
    return PortalClient(
        WebhookAuth(parse_webhook_url(url, allow_http=False)),
        timeout=timeout,
        ca_bundle=str(tls.ca_bundle),
        max_retries=max_retries,
        retry_base=0.01,
    )


async def failed_call(client: PortalClient, method: str = "crm.item.delete") -> TransportError:
    try:
        with pytest.raises(TransportError) as caught:
            await client.call(method, {"entityTypeId": 2, "id": 42})
    finally:
        await client.aclose()
    return caught.value


# Time


@pytest.mark.parametrize("respond", [trickle_body, trickle_head], ids=["body", "headers"])
async def test_a_portal_trickling_its_answer_is_cut_off_at_the_timeout(tls: TLSFiles, respond: Respond) -> None:
    async with hostile_portal(tls, respond) as portal:
        started = time.monotonic()
        error = await failed_call(client_for(portal.webhook_url, tls, timeout=TIMEOUT))
        elapsed = time.monotonic() - started
    assert (error.code, error.retryable, error.maybe_sent) == ("PORTAL_TIMEOUT", True, True)
    assert TIMEOUT * 0.95 <= elapsed < TIMEOUT + 1.5


async def test_each_attempt_is_bounded_so_a_call_lasts_at_most_timeout_times_attempts(tls: TLSFiles) -> None:
    async with hostile_portal(tls, trickle_body) as portal:
        started = time.monotonic()
        # A read: a timed-out write is not sent again before the portal's own 60 s limit has passed.
        error = await failed_call(client_for(portal.webhook_url, tls, timeout=TIMEOUT, max_retries=1), "crm.item.get")
        elapsed = time.monotonic() - started
    assert portal.requests == 2
    assert elapsed < 2 * TIMEOUT + 1.5
    assert (error.code, error.maybe_sent, error.after_lost_answer) == ("PORTAL_TIMEOUT", True, True)


async def test_a_handshake_that_never_completes_is_a_timeout_with_nothing_sent(tls: TLSFiles) -> None:
    async with hostile_portal(tls, trickle_body, handshake=False) as portal:
        started = time.monotonic()
        error = await failed_call(client_for(portal.webhook_url, tls, timeout=1.0))
        elapsed = time.monotonic() - started
    assert (error.code, error.retryable, error.maybe_sent) == ("PORTAL_TIMEOUT", True, False)
    assert elapsed < 2.5
    assert portal.requests == 0


# Size: the client runs in its own process, which reports its peak memory (Linux's VmHWM).

CHILD = """
import asyncio, json, sys
from b24_mcp.portal.auth import WebhookAuth
from b24_mcp.errors import B24Error
from b24_mcp.portal.client import PortalClient
from b24_mcp.settings import parse_webhook_url

def peak_kib():
    # VmHWM: this process's own peak resident size (ru_maxrss would include the parent's, inherited at fork).
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

async def main():
    client = PortalClient(
        WebhookAuth(parse_webhook_url(sys.argv[1], allow_http=False)), ca_bundle=sys.argv[2], timeout=60, max_retries=0
    )
    before = peak_kib()
    outcome = {}
    try:
        await client.call("crm.item.get", {"entityTypeId": 2, "id": 42})
    except B24Error as exc:
        outcome = {"kind": type(exc).__name__, "code": exc.code, "maybe_sent": getattr(exc, "maybe_sent", None)}
    finally:
        await client.aclose()
    peak = peak_kib()
    print(json.dumps(outcome | {"before_kib": before, "peak_kib": peak}))

asyncio.run(main())
"""


async def call_in_child(portal: HostilePortal, tls: TLSFiles) -> dict[str, object]:
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-c", CHILD, portal.webhook_url, str(tls.ca_bundle)], check=False
        )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, object] = json.loads(done.stdout)
    return result


def assert_small(outcome: dict[str, object]) -> None:
    peak, before = outcome["peak_kib"], outcome["before_kib"]
    assert isinstance(peak, int) and isinstance(before, int)
    assert peak < 150 * 1024, f"peak RSS {peak // 1024} MiB"
    assert peak - before < 3 * DEFAULT_MAX_ANSWER_BYTES // 1024, f"grew by {(peak - before) // 1024} MiB"


async def huge_body(writer: asyncio.StreamWriter) -> None:
    """A 200 MB JSON answer, written as fast as the client reads it."""
    opening, chunk, closing = b'{"result": "', b"x" * (256 * 1024), b'"}'
    count = 200 * 1000 * 1000 // len(chunk)
    writer.write(head(len(opening) + count * len(chunk) + len(closing)) + opening)
    for _ in range(count):
        writer.write(chunk)
        await writer.drain()
    writer.write(closing)
    await writer.drain()


def gzip_bomb_of(mebibytes: int) -> bytes:
    """A JSON answer with `mebibytes` MiB of zeros, as one gzip member whose deflate stream repeats the block of one
    MiB (after a full flush the compressor starts afresh, so every MiB compresses to the same bytes: made once)."""
    opening, zeros, closing = b'{"result": "', b"0" * MiB, b'"}'
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    start = deflate.compress(opening) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.compress(closing) + deflate.flush()
    crc = zlib.crc32(opening)
    for _ in range(mebibytes):
        crc = zlib.crc32(zeros, crc)
    size = len(opening) + mebibytes * MiB + len(closing)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # gzip, deflate, no name or time, best compression
    trailer = zlib.crc32(closing, crc).to_bytes(4, "little") + (size % 2**32).to_bytes(4, "little")
    return header + start + block * mebibytes + end + trailer


def test_the_gzip_bomb_is_one_valid_gzip_member_of_json() -> None:
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    answer = inflate.decompress(gzip_bomb_of(3))
    assert inflate.eof and not inflate.unused_data  # its CRC and size checked out
    assert answer == b'{"result": "' + b"0" * 3 * MiB + b'"}'


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """About 400 KiB that inflate to 400 MiB of JSON."""
    return gzip_bomb_of(400)


@pytest.mark.slow
@pytest.mark.process
async def test_a_200_mb_answer_is_abandoned_at_the_cap_in_little_memory(tls: TLSFiles) -> None:
    async with hostile_portal(tls, huge_body) as portal:
        outcome = await call_in_child(portal, tls)
    assert (outcome["kind"], outcome["code"], outcome["maybe_sent"]) == ("AnswerTooLarge", "BAD_PORTAL_RESPONSE", True)
    assert_small(outcome)


@pytest.mark.process
async def test_a_gzip_bomb_is_abandoned_at_the_cap_measured_after_decompression(
    tls: TLSFiles, gzip_bomb: bytes
) -> None:
    async def bomb(writer: asyncio.StreamWriter) -> None:
        writer.write(head(len(gzip_bomb), "Content-Encoding: gzip") + gzip_bomb)
        await writer.drain()

    assert len(gzip_bomb) < DEFAULT_MAX_ANSWER_BYTES // 16
    async with hostile_portal(tls, bomb) as portal:
        outcome = await call_in_child(portal, tls)
    assert (outcome["kind"], outcome["code"], outcome["maybe_sent"]) == ("AnswerTooLarge", "BAD_PORTAL_RESPONSE", True)
    assert_small(outcome)


async def test_an_answer_over_a_smaller_cap_is_not_retried(tls: TLSFiles) -> None:
    async def big(writer: asyncio.StreamWriter) -> None:
        body = json.dumps({"result": {"item": {"id": 42, "title": "x" * 5000}}}).encode()
        writer.write(head(len(body)) + body)
        await writer.drain()

    async with hostile_portal(tls, big) as portal:
        client = PortalClient(
            WebhookAuth(parse_webhook_url(portal.webhook_url, allow_http=False)),
            ca_bundle=str(tls.ca_bundle),
            max_retries=3,
            retry_base=0.01,
            max_answer_bytes=4096,
        )
        error = await failed_call(client)
    assert (error.code, error.retryable, error.maybe_sent, error.http_status) == (
        "BAD_PORTAL_RESPONSE",
        False,
        True,
        200,
    )
    assert portal.requests == 1
