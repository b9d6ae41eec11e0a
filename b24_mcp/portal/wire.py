"""One request to the portal or its OAuth server: bounded in time and size, the library's failures made ours.

`Wire` owns the process's pooled HTTP client (created on first use, so start-up builds no TLS context).
- `timeout` bounds each attempt as a whole (connecting, sending, and reading the last byte of the body), not
  each read: a portal trickling bytes is cut off after `timeout` seconds (`PORTAL_TIMEOUT`);
- an answer is read as a stream and abandoned once its decoded size passes `max_answer_bytes` (16 MiB by
  default, far beyond any real answer): a huge body or a compression bomb is `BAD_PORTAL_RESPONSE`;
- every failure of the HTTP library (a body that does not decode included) becomes a `TransportError` whose
  text is ours, never the library's (that may hold the URL, and a webhook URL holds its secret code, a token
  request's query string the client secret and the refresh token or code).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any, NamedTuple

import anyio
import httpx2

from b24_mcp import __version__
from b24_mcp.errors import AnswerTooLarge, TransportError

# httpx2 logs every request URL at INFO, and a webhook URL contains its secret code (a token request's query string
# the client secret and the refresh token or code): keep those records from ever being created, and drop any that
# a logging configuration lowering the level would let through.
for _name in ("httpx2", "httpcore2"):
    logging.getLogger(_name).setLevel(logging.WARNING)
logging.getLogger("httpx2").addFilter(lambda record: False)

logger = logging.getLogger(__name__)

# No real answer comes near this (a batch of 50 full items is a few hundred KiB); measured after decompression.
DEFAULT_MAX_ANSWER_BYTES = 16 * 1024 * 1024
# The portal ends every REST request within 60 s, nested batch commands included (limits.md). An attempt abandoned
# before then may still be running there: a repeat would do it twice, so the default waits past that limit.
PORTAL_TIME_LIMIT = 60.0
DEFAULT_TIMEOUT = 75.0


class Answer(NamedTuple):
    """What came back: the status, the two headers we read, and the decoded body (empty for a redirect)."""

    status: int
    content_type: str
    location: str
    content: bytes


class Wire:
    """Requests through one pooled HTTP client, each bounded by `timeout` as a whole and by `max_answer_bytes`."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ca_bundle: str | None = None,
        http_transport: httpx2.AsyncBaseTransport | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._ca_bundle = ca_bundle
        self._http_transport = http_transport  # replaces the network: the in-process sandbox portal
        self._http: httpx2.AsyncClient | None = None

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            # Building the TLS context loads the trust store: done on first call, not at start-up.
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=self._ca_bundle) if self._ca_bundle else True
            )
            self._http = httpx2.AsyncClient(
                timeout=httpx2.Timeout(self.timeout),
                verify=verify,
                transport=self._http_transport,
                follow_redirects=False,
                headers={"Accept": "application/json", "User-Agent": f"b24-mcp/{__version__}"},
            )
        return self._http

    async def aclose(self) -> None:
        """Close the pooled connections; a later request opens new ones."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def send(
        self,
        verb: str,
        url: str,
        *,
        who: str,
        what: str,
        host: str,
        acts: bool,
        json_body: Any = None,
        query: dict[str, str] | None = None,
    ) -> Answer:
        """One `verb` request with `json_body` or `query`; `who` answering `what` at `host` names it in errors.

        `acts` says whether reaching the other side may have done the work (a REST call) or not (a token
        refresh): it decides `maybe_sent` of the `TransportError` raised when no usable answer came back.
        """
        progress = _Progress()
        status: int | None = None
        try:
            with anyio.move_on_after(self.timeout) as scope:
                async with self._client().stream(
                    verb, url, json=json_body, params=query, extensions={"trace": progress.trace}
                ) as response:
                    status = response.status_code
                    headers = response.headers
                    # A redirect's body is of no use (its Location is all we report).
                    content = b"" if 300 <= status < 400 else await self._read(response)
                    return Answer(status, headers.get("content-type", ""), headers.get("location", ""), content)
        except _TooLargeError:
            raise AnswerTooLarge(
                "BAD_PORTAL_RESPONSE",
                f"{who} answered {what} with more than {self.max_answer_bytes // 1024} KiB (HTTP {status}); "
                "reading stopped there.",
                http_status=status,
                retryable=False,
                maybe_sent=acts,
            ) from None
        except (httpx2.HTTPError, httpx2.StreamError) as exc:
            if scope.cancel_called:  # the library turned our own deadline into an error of its own
                raise self._timed_out(who, what, acts and progress.sent is not False) from None
            raise self._failure(exc, who=who, what=what, host=host, status=status, acts=acts) from None
        raise self._timed_out(who, what, acts and progress.sent is not False)

    async def _read(self, response: httpx2.Response) -> bytes:
        """The decoded body, abandoned as soon as it passes the cap."""
        limit = self.max_answer_bytes
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise _TooLargeError
        return bytes(body)

    def _failure(
        self, exc: Exception, *, who: str, what: str, host: str, status: int | None, acts: bool
    ) -> TransportError:
        """Our own error for whatever the HTTP library raised; never its text (it may hold the URL)."""
        name = type(exc).__name__
        if isinstance(exc, httpx2.TimeoutException):
            # A connect or pool timeout means nothing was sent; any later one may have lost a delivered request.
            return self._timed_out(who, what, acts and not isinstance(exc, httpx2.ConnectTimeout | httpx2.PoolTimeout))
        if isinstance(exc, httpx2.ConnectError):
            return TransportError("PORTAL_UNREACHABLE", _connect_failure(exc, host), retryable=True, maybe_sent=False)
        logger.debug("%s to %s failed: %s", what, host, name)
        if isinstance(exc, httpx2.TransportError):
            return TransportError(
                "PORTAL_UNREACHABLE",
                f"The connection to {host} broke during {what} ({name}).",
                retryable=True,
                maybe_sent=acts,
            )
        # A body that does not decode (a broken gzip stream, too many encodings), or anything else the library
        # raises once the request went out: the other side may have acted.
        return TransportError(
            "BAD_PORTAL_RESPONSE",
            f"{who} answered {what} with HTTP {status} and a body that could not be read ({name}).",
            http_status=status,
            retryable=status is not None and status >= 500,
            maybe_sent=acts,
        )

    def _timed_out(self, who: str, what: str, sent: bool) -> TransportError:
        return TransportError(
            "PORTAL_TIMEOUT",
            f"{who} did not answer {what} within {self.timeout:g} s.",
            retryable=True,
            maybe_sent=sent,
        )


class _TooLargeError(Exception):
    pass


class _Progress:
    """Follows a request through the connection library's trace events, to tell whether it can have been sent.

    `sent` stays None when the transport reports nothing (then it may have been sent), is False while
    connecting, and True from the moment the request's headers start going out.
    """

    __slots__ = ("sent",)

    def __init__(self) -> None:
        self.sent: bool | None = None

    async def trace(self, name: str, info: Mapping[str, Any]) -> None:
        if self.sent:
            return
        if ".send_request_" in name:
            self.sent = True
        elif name.startswith("connection."):
            self.sent = False


def _connect_failure(exc: httpx2.ConnectError, host: str) -> str:
    cause: BaseException | None = exc
    for _ in range(32):  # a chain, bounded in case it loops
        if cause is None:
            break
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"The TLS certificate of {host} could not be verified; "
                "for a portal with its own certificate authority set B24_CA_BUNDLE."
            )
        cause = cause.__cause__ or cause.__context__
    return f"Could not connect to {host}."
