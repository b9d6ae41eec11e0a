"""The emulated portal's state as the handlers see it: its parts, its method table, the request log and the
answers' `time` block. `Portal` (``emulator``) is a facade over it for tests and tools; no handler imports it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import timedelta, timezone
from typing import Any

from b24_mcp.sandbox.crm import CrmStore
from b24_mcp.sandbox.envelope import Outcome, RestError, time_block
from b24_mcp.sandbox.faults import FaultQueue
from b24_mcp.sandbox.limits import DEFAULT_OPERATING_LIMIT, OperatingLimiter, RequestBucket
from b24_mcp.sandbox.log import DEFAULT_LOG_LIMIT, Call, CallLog
from b24_mcp.sandbox.oauth import OAuthServer
from b24_mcp.sandbox.users import Caller, Directory

Handler = Callable[["PortalState", Caller, dict[str, Any]], Outcome]

_DEFAULT_TZ = timezone(timedelta(hours=3))


class PortalState:
    """One emulated portal's parts: CRM data, people, OAuth server, limits, faults, request log, method table."""

    def __init__(
        self,
        *,
        host: str = "sandbox.bitrix24.test",
        rate_limit: tuple[int, float] | None = (50, 2.0),
        require_https: bool = True,
        language: str = "en",
        tz: timezone = _DEFAULT_TZ,
        operating_limit: float | None = DEFAULT_OPERATING_LIMIT,
        operating_window: float = 600.0,
        operating_cost: Mapping[str, float] | None = None,
        access_ttl: float = 3600.0,
        code_ttl: float = 30.0,
        log_limit: int | None = DEFAULT_LOG_LIMIT,
    ) -> None:
        self.host = host
        self.require_https = require_https
        self.language = language
        self.crm = CrmStore(tz)
        self.directory = Directory()
        self.oauth = OAuthServer(access_ttl=access_ttl, code_ttl=code_ttl)
        self.bucket = RequestBucket(rate_limit)
        self.operating = OperatingLimiter(operating_limit, operating_window, operating_cost)
        self.faults = FaultQueue()
        self.calls = CallLog(log_limit)
        # Error code (as a string) -> HTTP status to answer instead of the default one.
        self.status_overrides: dict[str, int] = {}
        self.methods: dict[str, Handler] = {}  # the facade (`emulator.Portal`) fills the table
        self._attach()

    def _attach(self) -> None:
        """What a facade adds once the parts exist (`emulator.Portal`: the method table, its names for them)."""

    @property
    def tz(self) -> timezone:
        return self.crm.tz

    @tz.setter
    def tz(self, value: timezone) -> None:
        self.crm.tz = value

    @property
    def member_id(self) -> str:
        """The portal's id in OAuth answers (stable for a host)."""
        return hashlib.sha256(self.host.encode()).hexdigest()[:32]

    def log(
        self,
        method: str,
        params: dict[str, Any],
        user_id: int | None,
        status: int,
        error: Any,
        *,
        via_batch: bool = False,
        dropped: bool = False,
    ) -> None:
        error_text = None if error is None else str(error)
        self.calls.append(Call(method, params, user_id, status, error_text, via_batch=via_batch, dropped=dropped))

    def status_for(self, err: RestError) -> int:
        return self.status_overrides.get(str(err.code), err.status)

    def time_block(self, start: float, finish: float, processing: float, credential: str, method: str) -> Any:
        operating, reset_at = self.operating.reading(credential, method)
        return time_block(start, finish, processing, self.tz, operating, reset_at)
