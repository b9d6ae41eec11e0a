"""The portal client: one HTTP client per process, calls to REST methods, answers turned into results or errors.

The webhook base URL carries the secret code, so it lives only inside this module's client: it is never
formatted into a message, and the HTTP library's own request logging is silenced for good.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx2

from b24_mcp import __version__
from b24_mcp.auth import Auth
from b24_mcp.errors import B24Error, PortalError, TransportError, may_have_acted
from b24_mcp.limiter import LeakyBucket

# httpx2 logs every request URL at INFO, and a webhook URL contains its secret code: keep those records from
# ever being created, whatever logging configuration the process ends up with.
for _name in ("httpx2", "httpcore2"):
    logging.getLogger(_name).setLevel(logging.WARNING)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PortalResponse:
    """A successful answer: the `result` payload plus the list fields and timing the portal adds."""

    result: Any
    total: int | None = None
    next: int | None = None
    time: Mapping[str, Any] | None = None
    after_lost_answer: bool = False  # an earlier attempt of this call may have reached the portal too


_deadline: ContextVar[float | None] = ContextVar("b24_deadline", default=None)


class PortalClient:
    """Calls REST methods of one portal through one pooled HTTP client, created on first use.

    Every call is paced by the shared leaky bucket, retried with backoff when a retry can help, and renewed once
    on `expired_token` when the credential can be refreshed.
    """

    def __init__(
        self,
        auth: Auth,
        *,
        timeout: float = 30.0,
        ca_bundle: str | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
        limiter: LeakyBucket | None = None,
        max_retries: int = 3,
        retry_base: float = 0.5,
    ) -> None:
        self._auth = auth
        self._timeout = timeout
        self._ca_bundle = ca_bundle
        self._transport = transport
        self._limiter = limiter
        self._max_retries = max_retries
        self._retry_base = retry_base
        self._http: httpx2.AsyncClient | None = None
        self._reset_at: dict[str, int] = {}  # method -> the portal's operating_reset_at from its last answer
        self._blocked_until: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"PortalClient(host={self.host!r}, user_id={self.user_id})"

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

    def _client(self) -> httpx2.AsyncClient:
        if self._http is None:
            # Building the TLS context loads the trust store: done on first call, not at start-up.
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=self._ca_bundle) if self._ca_bundle else True
            )
            self._http = httpx2.AsyncClient(
                timeout=httpx2.Timeout(self._timeout),
                verify=verify,
                transport=self._transport,
                follow_redirects=False,
                headers={"Accept": "application/json", "User-Agent": f"b24-mcp/{__version__}"},
            )
        return self._http

    async def aclose(self) -> None:
        """Close the pooled connections."""
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
        """Call a REST method; raise `PortalError` for an error body, `TransportError` when no answer is usable.

        An error raised after an earlier attempt may have reached the portal has `after_lost_answer` set.
        """
        retries = 0
        refreshed = False
        lost = False
        while True:
            self._check_blocked(method)
            if self._limiter is not None:
                await self._limiter.acquire()
            generation = self._auth.generation
            error: B24Error
            try:
                answer = await self._send(method, params)
            except PortalError as exc:
                if exc.is_code("expired_token") and self._auth.can_refresh and not refreshed:
                    await self._auth.refresh(self._client(), generation)
                    refreshed = True
                    continue
                error = self._explain(method, exc)
            except TransportError as exc:
                error = exc
            else:
                if answer.time and isinstance(answer.time.get("operating_reset_at"), int):
                    self._reset_at[method] = answer.time["operating_reset_at"]
                return replace(answer, after_lost_answer=True) if lost else answer
            error.after_lost_answer = lost
            delay = self._retry_base * 2**retries * (0.5 + random.random())  # noqa: S311 (jitter, not crypto)
            end = _deadline.get()
            if not _worth_retrying(error) or retries >= self._max_retries or (end and time.monotonic() + delay > end):
                raise error
            lost = lost or may_have_acted(error)
            retries += 1
            logger.info("%s: %s, retry %d in %.1f s", method, error.code, retries, delay)
            await anyio.sleep(delay)

    async def _send(self, method: str, params: Mapping[str, Any]) -> PortalResponse:
        url, body = self._auth.prepare(method, params)
        try:
            response = await self._client().post(url, json=body)
        except httpx2.TimeoutException as exc:
            # A connect timeout means nothing was sent; any later timeout may have lost a delivered request.
            sent = not isinstance(exc, httpx2.ConnectTimeout | httpx2.PoolTimeout)
            raise TransportError(
                "PORTAL_TIMEOUT",
                f"The portal did not answer {method} within {self._timeout:g} s.",
                retryable=True,
                maybe_sent=sent,
            ) from None
        except httpx2.ConnectError as exc:
            raise TransportError(
                "PORTAL_UNREACHABLE", _connect_failure(exc, self.host), retryable=True, maybe_sent=False
            ) from None
        except httpx2.TransportError as exc:
            logger.debug("%s to %s failed: %s", method, self.host, type(exc).__name__)
            raise TransportError(
                "PORTAL_UNREACHABLE",
                f"The connection to {self.host} broke during {method} ({type(exc).__name__}).",
                retryable=True,
                maybe_sent=True,
            ) from None
        return _interpret(method, response, self.host)

    def _explain(self, method: str, error: PortalError) -> PortalError:
        """Add what the assistant needs to act on an error: when a blocked method unblocks, how to renew."""
        if error.is_code("QUERY_LIMIT_EXCEEDED") and self._limiter is not None:
            self._limiter.saturate()
        if error.is_code("OPERATION_TIME_LIMIT"):
            reset = self._reset_at.get(method)
            if reset is not None and reset > time.time():
                self._blocked_until[method] = reset
                error.hint = f"The portal unblocks {method} at {_utc(reset)} (operating_reset_at); retry then."
            else:
                error.hint = f"The portal blocked {method} for a while; retry in a few minutes."
        if error.is_code("expired_token") and not self._auth.can_refresh:
            error.hint = "Set B24_REFRESH_TOKEN, B24_CLIENT_ID and B24_CLIENT_SECRET so the token renews itself."
        return error

    def _check_blocked(self, method: str) -> None:
        until = self._blocked_until.get(method)
        if until is None:
            return
        if until <= time.time():
            del self._blocked_until[method]
            return
        error = PortalError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", http_status=None)
        error.hint = f"Not sent: the portal unblocks {method} at {_utc(until)} (operating_reset_at); retry then."
        raise error


def _worth_retrying(error: B24Error) -> bool:
    # A blocked method stays blocked for minutes: say when, rather than retrying in a loop.
    return error.retryable and not error.is_code("OPERATION_TIME_LIMIT")


def _utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _connect_failure(exc: httpx2.ConnectError, host: str) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"The TLS certificate of {host} could not be verified; "
                "for a portal with its own certificate authority set B24_CA_BUNDLE."
            )
        cause = cause.__cause__ or cause.__context__
    return f"Could not connect to {host}."


def _interpret(method: str, response: httpx2.Response, host: str) -> PortalResponse:
    status = response.status_code
    if 300 <= status < 400:
        # The portal moved (a new domain); following it silently would send the webhook code elsewhere.
        target = httpx2.URL(response.headers.get("location", "")).host or "another address"
        raise TransportError(
            "PORTAL_REDIRECT",
            f"The portal {host} redirects to {target} (HTTP {status}); it may have moved to a new domain. "
            "Update B24_WEBHOOK_URL after checking the new address.",
            http_status=status,
            retryable=False,
            maybe_sent=False,
        )
    try:
        body = json.loads(response.content) if response.content.strip() else None
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and "error" in body:
        description = body.get("error_description")
        raise PortalError(str(body["error"]), "" if description is None else str(description), http_status=status)
    if isinstance(body, dict) and "result" in body and status < 300:
        return PortalResponse(
            result=body["result"],
            total=body.get("total") if isinstance(body.get("total"), int) else None,
            next=body.get("next") if isinstance(body.get("next"), int) else None,
            time=body.get("time") if isinstance(body.get("time"), dict) else None,
        )
    kind = response.headers.get("content-type", "no content type").split(";")[0] or "no content type"
    what = "an empty body" if not response.content.strip() else f"a {kind} body that is not a REST answer"
    raise TransportError(
        "BAD_PORTAL_RESPONSE",
        f"The portal answered {method} with HTTP {status} and {what}.",
        http_status=status,
        retryable=status >= 500,
        maybe_sent=True,
    )
