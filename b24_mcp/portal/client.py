"""The portal client: calls to REST methods under the portal's limits, answers turned into results or errors.

`PortalClient` is the call policy: pacing by the shared leaky bucket, retries with backoff when a retry can help,
one renewal on `expired_token` when the credential can be refreshed, and the methods the portal blocked until
its `operating_reset_at`. The request itself is `wire.Wire` (bounded in time and size); reading what came
back is `answer.read_answer`. The webhook base URL carries the secret code, so it lives only inside the request
the credential prepares: it is never formatted into a message.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2

from b24_mcp.errors import B24Error, PortalError, Refusal, TransportError, may_have_acted
from b24_mcp.portal.answer import ErrorBody, PortalResponse, read_answer
from b24_mcp.portal.auth import Auth
from b24_mcp.portal.limiter import Pacing
from b24_mcp.portal.wire import DEFAULT_MAX_ANSWER_BYTES, DEFAULT_TIMEOUT, PORTAL_TIME_LIMIT, Wire
from b24_mcp.telemetry import metrics

__all__ = ["DEFAULT_MAX_ANSWER_BYTES", "PortalClient", "PortalResponse"]

logger = logging.getLogger(__name__)

# How far ahead an operating_reset_at may lie to block a method here (the portal's window is 10 minutes).
_MAX_BLOCK = 3600

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
        timeout: float = DEFAULT_TIMEOUT,
        ca_bundle: str | None = None,
        http_transport: httpx2.AsyncBaseTransport | None = None,
        limiter: Pacing | None = None,
        max_retries: int = 3,
        retry_base: float = 0.5,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        wire: Wire | None = None,
    ) -> None:
        self._auth = auth
        # `wire`: another client's pool (`for_credential`), whose own limits then apply; its owner closes it.
        self._owns_wire = wire is None
        self._wire = wire or Wire(
            timeout=timeout, ca_bundle=ca_bundle, http_transport=http_transport, max_answer_bytes=max_answer_bytes
        )
        self._limiter = limiter
        self._max_retries = max_retries
        self._retry_base = retry_base
        self._reset_at: dict[str, int] = {}  # method -> the portal's operating_reset_at from its last answer
        self._blocked_until: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"PortalClient(host={self.host!r}, user_id={self.user_id})"

    def for_credential(self, auth: Auth) -> PortalClient:
        """A client of the same portal acting with another credential (a signed-in person): it shares this
        client's HTTP pool, rate limiter and limits, and keeps its own record of the methods the portal blocked
        (the portal counts those per credential). Closing it leaves the pool to this client."""
        return PortalClient(
            auth, wire=self._wire, limiter=self._limiter, max_retries=self._max_retries, retry_base=self._retry_base
        )

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

    async def aclose(self) -> None:
        """Close the pooled connections (a client made by `for_credential` leaves them to its pool's owner)."""
        if self._owns_wire:
            await self._wire.aclose()

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
                waiting = time.perf_counter()
                until = await self._limiter.acquire(method)
                metrics.rate_limit_waited(time.perf_counter() - waiting)
                if until is not None:  # another replica met the portal's block of this method
                    self._blocked_until[method] = until
                    if previous is not None:
                        raise previous  # say what happened to this call's own attempt
                    self._check_blocked(method)
            generation = self._auth.generation
            error: B24Error
            started = time.monotonic()
            try:
                answer = await self._send(method, params)
            except PortalError as exc:
                if exc.is_code("expired_token") and self._auth.can_refresh and not refreshed:
                    refreshed = True
                    try:
                        await self._auth.refresh(self.request_token, generation)
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
            if error.is_code("PORTAL_TIMEOUT") and may_have_acted(error) and _may_write(method):
                # The abandoned attempt may still be running on the portal: never send it again before the
                # portal's own limit has ended it (a shorter B24_TIMEOUT than that would otherwise delete twice).
                delay = max(delay, started + PORTAL_TIME_LIMIT - time.monotonic())
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
        with metrics.portal_request(method):
            answer = await self._wire.send(
                "POST", url, json_body=body, who="The portal", what=method, host=self.host, acts=True
            )
            read = read_answer(method, answer, host=self.host, secrets=self._auth.secrets)
            if isinstance(read, ErrorBody):
                raise self._portal_error(method, read)
        return read

    async def request_token(self, url: str, params: Mapping[str, str]) -> tuple[int, bytes]:
        """Ask an OAuth server's token endpoint under this client's limits: (HTTP status, body). A GET with the
        parameters as its query string, the one form documented (the official PHP and Python SDKs use it; a POSTed
        form is known to work on one OAuth host only). Raises `TransportError` when no answer came back; such a
        failure never counts as a REST call sent."""
        with metrics.portal_request("oauth.token"):
            answer = await self._wire.send(
                "GET",
                url,
                query=dict(params),
                who="The OAuth server",
                what="the token refresh",
                host=urlsplit(url).netloc,
                acts=False,
            )
        return answer.status, answer.content

    def _portal_error(self, method: str, error: ErrorBody) -> PortalError:
        """The portal's error as sent, with what the assistant needs to act on it."""
        code = error.code
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
        return PortalError(code, error.description, http_status=error.status, hint=hint)

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


_READS = frozenset({"get", "list", "fields", "current", "profile", "scope"})


def _may_write(method: str) -> bool:
    """Whether a method may change the portal (`batch` too: it may hold deletes); reads are named so."""
    return method.rsplit(".", 1)[-1].lower() not in _READS


def _worth_retrying(error: B24Error) -> bool:
    # A blocked method stays blocked for minutes: say when, rather than retrying in a loop.
    return error.retryable and not error.is_code("OPERATION_TIME_LIMIT")


def _utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
