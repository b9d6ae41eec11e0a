"""The portal client: one HTTP client per process, calls to REST methods, answers turned into results or errors.

The webhook base URL carries the secret code, so it lives only inside this module's client: it is never
formatted into a message, and the HTTP library's own request logging is silenced for good.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2

from b24_mcp import __version__
from b24_mcp.errors import PortalError, TransportError
from b24_mcp.settings import Webhook

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


class PortalClient:
    """Calls REST methods of one portal through one pooled HTTP client, created on first use."""

    def __init__(
        self,
        webhook: Webhook,
        *,
        timeout: float = 30.0,
        ca_bundle: str | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._webhook = webhook
        self._timeout = timeout
        self._ca_bundle = ca_bundle
        self._transport = transport
        self._http: httpx2.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"PortalClient(host={self.host!r}, user_id={self.user_id})"

    @property
    def host(self) -> str:
        """The portal's host (and port), safe to show."""
        return self._webhook.host

    @property
    def user_id(self) -> int:
        """The user the webhook acts as."""
        return self._webhook.user_id

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

    async def call(self, method: str, params: Mapping[str, Any]) -> PortalResponse:
        """Call a REST method; raise `PortalError` for an error body, `TransportError` when no answer is usable."""
        try:
            response = await self._client().post(self._webhook.base_url + method, json=dict(params))
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
