"""The portal client: one HTTP client per process, calls to REST methods, answers turned into results or errors.

The webhook base URL carries the secret code, so it lives only inside this module's client: it is never
formatted into a message, and the HTTP library's own request logging is silenced for good.

Everything that comes back is hostile until checked:
- `timeout` bounds each attempt as a whole (connecting, sending, and reading the last byte of the body), not
  each read: a portal trickling bytes is cut off after `timeout` seconds (`PORTAL_TIMEOUT`);
- an answer is read as a stream and abandoned once its decoded size passes `max_answer_bytes` (16 MiB by
  default, far beyond any real answer): a huge body or a compression bomb is `BAD_PORTAL_RESPONSE`;
- every failure of the HTTP library (a body that does not decode included) becomes a `TransportError`;
- every text taken from an answer into an error (codes, descriptions, a redirect's host, a content type) passes
  through the credential's `scrub` and is clipped; a successful answer that echoes a secret is masked too.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import anyio
import httpx2

from b24_mcp import __version__
from b24_mcp.auth import MAX_CODE, Auth
from b24_mcp.errors import B24Error, PortalError, Refusal, TransportError, may_have_acted
from b24_mcp.limiter import Pacing

# httpx2 logs every request URL at INFO, and a webhook URL contains its secret code: keep those records from
# ever being created, whatever logging configuration the process ends up with.
for _name in ("httpx2", "httpcore2"):
    logging.getLogger(_name).setLevel(logging.WARNING)

logger = logging.getLogger(__name__)

# No real answer comes near this (a batch of 50 full items is a few hundred KiB); measured after decompression.
DEFAULT_MAX_ANSWER_BYTES = 16 * 1024 * 1024
# How far ahead an operating_reset_at may lie to block a method here (the portal's window is 10 minutes).
_MAX_BLOCK = 3600


@dataclass(frozen=True)
class PortalResponse:
    """A successful answer: the `result` payload plus the list fields and timing the portal adds."""

    result: Any
    total: int | None = None
    next: int | None = None
    time: Mapping[str, Any] | None = None
    after_lost_answer: bool = False  # an earlier attempt of this call may have reached the portal too


class _Answer(NamedTuple):
    status: int
    content_type: str
    location: str
    content: bytes


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


_deadline: ContextVar[float | None] = ContextVar("b24_deadline", default=None)


class PortalClient:
    """Calls REST methods of one portal through one pooled HTTP client, created on first use.

    Every call is paced by the shared leaky bucket, retried with backoff when a retry can help, and renewed once
    on `expired_token` when the credential can be refreshed. Each attempt, and each token refresh, lasts at most
    `timeout` seconds and reads at most `max_answer_bytes` of decoded answer.
    """

    def __init__(
        self,
        auth: Auth,
        *,
        timeout: float = 30.0,
        ca_bundle: str | None = None,
        http_transport: httpx2.AsyncBaseTransport | None = None,
        limiter: Pacing | None = None,
        max_retries: int = 3,
        retry_base: float = 0.5,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self._auth = auth
        self._timeout = timeout
        self._ca_bundle = ca_bundle
        self._http_transport = http_transport  # replaces the network: the in-process sandbox portal
        self._limiter = limiter
        self._max_retries = max_retries
        self._retry_base = retry_base
        self._max_answer_bytes = max_answer_bytes
        self._http: httpx2.AsyncClient | None = None
        self._reset_at: dict[str, int] = {}  # method -> the portal's operating_reset_at from its last answer
        self._blocked_until: dict[str, int] = {}
        self._pool_owner: PortalClient | None = None  # set by `for_credential`: whose HTTP pool this client uses

    def __repr__(self) -> str:
        return f"PortalClient(host={self.host!r}, user_id={self.user_id})"

    def for_credential(self, auth: Auth) -> PortalClient:
        """A client of the same portal acting with another credential (a signed-in person): it shares this
        client's HTTP pool, rate limiter and limits, and keeps its own record of the methods the portal blocked
        (the portal counts those per credential). Closing it leaves the pool to this client."""
        other = PortalClient(
            auth,
            timeout=self._timeout,
            ca_bundle=self._ca_bundle,
            http_transport=self._http_transport,
            limiter=self._limiter,
            max_retries=self._max_retries,
            retry_base=self._retry_base,
            max_answer_bytes=self._max_answer_bytes,
        )
        other._pool_owner = self._pool_owner or self
        return other

    @property
    def host(self) -> str:
        """The portal's host (and port), safe to show."""
        return self._auth.host

    @property
    def user_id(self) -> int | None:
        """The user the credential acts as, when known."""
        return self._auth.user_id

    @property
    def identity(self) -> str:
        """Portal and credential, not secret: what confirmation tokens are bound to."""
        return self._auth.identity

    def scrub(self, text: str) -> str:
        """`text` with every secret of the credential (webhook code and URL, tokens, client secret) as `***`."""
        return self._auth.scrub(text)

    def _client(self) -> httpx2.AsyncClient:
        if self._pool_owner is not None:
            return self._pool_owner._client()
        if self._http is None:
            # Building the TLS context loads the trust store: done on first call, not at start-up.
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=self._ca_bundle) if self._ca_bundle else True
            )
            self._http = httpx2.AsyncClient(
                timeout=httpx2.Timeout(self._timeout),
                verify=verify,
                transport=self._http_transport,
                follow_redirects=False,
                headers={"Accept": "application/json", "User-Agent": f"b24-mcp/{__version__}"},
            )
        return self._http

    async def aclose(self) -> None:
        """Close the pooled connections (a client made by `for_credential` leaves them to its pool's owner)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @contextmanager
    def deadline(self, seconds: float) -> Iterator[None]:
        """Within this block, no retry starts that would end more than `seconds` from now."""
        token = _deadline.set(time.monotonic() + seconds)
        try:
            yield
        finally:
            _deadline.reset(token)

    async def call(self, method: str, params: Mapping[str, Any]) -> PortalResponse:
        """Call a REST method; raise `PortalError` for an error body, `TransportError` when no answer is usable,
        `Refusal` (`OPERATION_TIME_LIMIT`) without sending when the portal blocked the method until later.

        An error raised after an earlier attempt may have reached the portal has `after_lost_answer` set.
        """
        self._check_blocked(method)
        retries = 0
        refreshed = False
        lost = False
        previous: B24Error | None = None  # the last attempt's error, once retrying
        while True:
            if self._limiter is not None:
                until = await self._limiter.acquire(method)
                if until is not None:  # another replica met the portal's block of this method
                    self._blocked_until[method] = until
                    if previous is not None:
                        raise previous  # say what happened to this call's own attempt
                    self._check_blocked(method)
            generation = self._auth.generation
            error: B24Error
            try:
                answer = await self._send(method, params)
            except PortalError as exc:
                if exc.is_code("expired_token") and self._auth.can_refresh and not refreshed:
                    refreshed = True
                    try:
                        await self._auth.refresh(self._post_form, generation)
                    except (PortalError, TransportError) as failure:
                        raise (failure.with_lost_answer() if lost else failure) from None
                    continue
                error = exc
            except TransportError as exc:
                error = exc
            else:
                reset = answer.time.get("operating_reset_at") if answer.time else None
                if isinstance(reset, int) and not isinstance(reset, bool):
                    self._reset_at[method] = reset
                return replace(answer, after_lost_answer=True) if lost else answer
            until = self._blocked_until.get(method)
            if self._limiter is not None and until is not None and error.is_code("OPERATION_TIME_LIMIT"):
                await self._limiter.block(method, until)  # the other replicas stop sending it too
            if lost:
                error = error.with_lost_answer()
            delay = self._retry_base * 2**retries * (0.5 + random.random())  # noqa: S311 (jitter, not crypto)
            end = _deadline.get()
            if (
                not _worth_retrying(error)
                or retries >= self._max_retries
                or (end and time.monotonic() + delay > end)
                or self._blocked(method) is not None  # blocked meanwhile by another call: say what happened here
            ):
                raise error
            lost = lost or may_have_acted(error)
            retries += 1
            logger.info("%s: %s, retry %d in %.1f s", method, error.code, retries, delay)
            previous = error
            await anyio.sleep(delay)

    async def _send(self, method: str, params: Mapping[str, Any]) -> PortalResponse:
        url, body = self._auth.prepare(method, params)
        answer = await self._exchange(url, json_body=body, who="The portal", what=method, host=self.host, acts=True)
        return self._interpret(method, answer)

    async def post_form(self, url: str, form: Mapping[str, str]) -> tuple[int, bytes]:
        """POST a form to an OAuth server (a token request) under this client's limits: (HTTP status, body).
        Raises `TransportError` when no answer came back; such a failure never counts as a REST call sent."""
        return await self._post_form(url, form)

    async def _post_form(self, url: str, form: Mapping[str, str]) -> tuple[int, bytes]:
        """POST a form (the OAuth token refresh) under the same limits; failures never count as the call sent."""
        host = urlsplit(url).netloc
        answer = await self._exchange(
            url, form=dict(form), who="The OAuth server", what="the token refresh", host=host, acts=False
        )
        return answer.status, answer.content

    async def _exchange(
        self,
        url: str,
        *,
        who: str,
        what: str,
        host: str,
        acts: bool,
        json_body: Any = None,
        form: dict[str, str] | None = None,
    ) -> _Answer:
        """One POST, bounded as a whole by `timeout` and in size by `max_answer_bytes`.

        `acts` says whether reaching the other side may have done the work (a REST call) or not (a token
        refresh): it decides `maybe_sent` of the `TransportError` raised when no usable answer came back.
        """
        progress = _Progress()
        status: int | None = None
        try:
            with anyio.move_on_after(self._timeout) as scope:
                async with self._client().stream(
                    "POST", url, json=json_body, data=form, extensions={"trace": progress.trace}
                ) as response:
                    status = response.status_code
                    headers = response.headers
                    # A redirect's body is of no use (its Location is all we report).
                    content = b"" if 300 <= status < 400 else await self._read(response)
                    return _Answer(status, headers.get("content-type", ""), headers.get("location", ""), content)
        except _TooLargeError:
            raise TransportError(
                "BAD_PORTAL_RESPONSE",
                f"{who} answered {what} with more than {self._max_answer_bytes // 1024} KiB (HTTP {status}); "
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

    async def _read(self, response: httpx2.Response) -> bytes:
        """The decoded body, abandoned as soon as it passes the cap."""
        limit = self._max_answer_bytes
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                raise _TooLargeError
        return bytes(body)

    def _timed_out(self, who: str, what: str, sent: bool) -> TransportError:
        return TransportError(
            "PORTAL_TIMEOUT",
            f"{who} did not answer {what} within {self._timeout:g} s.",
            retryable=True,
            maybe_sent=sent,
        )

    def _interpret(self, method: str, answer: _Answer) -> PortalResponse:
        status = answer.status
        scrub = self._auth.scrub
        if 300 <= status < 400:
            # The portal moved (a new domain); following it silently would send the webhook code elsewhere.
            target = self._auth.secrets.outside_text(_host_of(answer.location), 100) or "another address"
            raise TransportError(
                "PORTAL_REDIRECT",
                f"The portal {self.host} redirects to {target} (HTTP {status}); it may have moved to a new domain. "
                "Update B24_WEBHOOK_URL after checking the new address.",
                http_status=status,
                retryable=False,
                maybe_sent=False,
            )
        content = answer.content
        try:
            body = json.loads(content) if content.strip() else None
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; RecursionError: deep nesting
            body = None
        if isinstance(body, dict) and self._auth.secrets.found_in(content):
            logger.warning("The portal's answer to %s contained a secret of the credential; it is masked", method)
            body = _scrubbed(body, scrub)
        if isinstance(body, dict) and "error" in body:
            raise self._portal_error(method, body["error"], body.get("error_description"), status)
        if isinstance(body, dict) and "result" in body and status < 300:
            total, after, timing = body.get("total"), body.get("next"), body.get("time")
            return PortalResponse(
                result=body["result"],
                total=total if _is_int(total) else None,
                next=after if _is_int(after) else None,
                time=timing if isinstance(timing, dict) else None,
            )
        kind = self._auth.secrets.outside_text(answer.content_type.split(";")[0].strip(), 60) or "no content type"
        what = "an empty body" if not content.strip() else f"a {kind} body that is not a REST answer"
        raise TransportError(
            "BAD_PORTAL_RESPONSE",
            f"The portal answered {method} with HTTP {status} and {what}.",
            http_status=status,
            retryable=status >= 500,
            maybe_sent=True,
        )

    def _portal_error(self, method: str, code_value: Any, description_value: Any, status: int) -> PortalError:
        """The portal's error as sent (scrubbed of secrets), with what the assistant needs to act on it."""
        secrets = self._auth.secrets
        code = secrets.outside_text(code_value, MAX_CODE)
        description = "" if description_value is None else secrets.outside_text(description_value)
        hint = None
        upper = code.upper()
        if upper == "QUERY_LIMIT_EXCEEDED" and self._limiter is not None:
            self._limiter.saturate()
        elif upper == "OPERATION_TIME_LIMIT":
            reset = self._reset_at.get(method)
            if reset is not None and time.time() < reset <= time.time() + _MAX_BLOCK:
                self._blocked_until[method] = reset
                hint = f"The portal unblocks {method} at {_utc(reset)} (operating_reset_at); retry then."
            else:
                hint = f"The portal blocked {method} for a while; retry in a few minutes."
        elif upper == "EXPIRED_TOKEN" and not self._auth.can_refresh:
            hint = "Set B24_REFRESH_TOKEN, B24_CLIENT_ID and B24_CLIENT_SECRET so the token renews itself."
        return PortalError(code, description, http_status=status, hint=hint)

    def _blocked(self, method: str) -> int | None:
        """Until when the portal blocked `method` (its operating_reset_at), if it still is."""
        until = self._blocked_until.get(method)
        if until is not None and until <= time.time():
            del self._blocked_until[method]
            return None
        return until

    def _check_blocked(self, method: str) -> None:
        until = self._blocked(method)
        if until is not None:
            raise Refusal(
                "OPERATION_TIME_LIMIT",
                f"Not sent: the portal blocked {method} until {_utc(until)} (its operating_reset_at), after this "
                "credential used up its processing time for it.",
                retryable=True,
                hint=f"Retry after {_utc(until)}.",
            )


def _worth_retrying(error: B24Error) -> bool:
    # A blocked method stays blocked for minutes: say when, rather than retrying in a loop.
    return error.retryable and not error.is_code("OPERATION_TIME_LIMIT")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _host_of(location: str) -> str:
    try:
        return urlsplit(location).hostname or ""
    except ValueError:
        return ""


def _scrubbed(body: dict[str, Any], scrub: Callable[[str], str]) -> dict[str, Any] | None:
    """A parsed answer with every string (keys too) scrubbed; None when it is nested too deeply to walk."""
    try:
        return {scrub(key): _scrub_value(item, scrub) for key, item in body.items()}
    except RecursionError:
        return None


def _scrub_value(value: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(key): _scrub_value(item, scrub) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_value(item, scrub) for item in value]
    return value


def _utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


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
