"""The failures b24-mcp reports: each has a code the assistant can act on.

Three kinds, by who said it:
- `PortalError`: the portal answered with an error body; its code and description exactly as sent.
- `TransportError`: nothing usable came back (unreachable, timed out, a body that is not a REST answer, a
  redirect): our own code for what happened on the way.
- `Refusal`: our own decision, taken before anything was deleted (the gate, a guardrail, the journal, a
  method the portal blocked earlier).

Every field, `hint` included, is set at construction; `with_lost_answer` returns a copy instead of mutating.

Every exception b24-mcp raises, where it lives (the ones outside this module stay beside the code that raises
them, and never reach a tool result as such):

    Exception
    ├── B24Error                       a failure a tool reports (code, message, hint, may_have_acted)
    │   ├── PortalError                the portal's error body, as sent
    │   ├── TransportError             nothing usable came back
    │   │   └── AnswerTooLarge         an answer over the cap
    │   └── Refusal                    our own decision, nothing deleted
    │       └── JournalUnwritable      journal.record: the intent could not be recorded
    ├── SettingsError                  configuration that cannot work, one line per variable (here; re-exported
    │                                  by settings)
    ├── UnusableFileError              secure.sealing: a key or state file that is not safely ours
    ├── DatabaseUnavailableError       postgres.database: the shared database cannot be reached
    ├── SchemaTooNewError              postgres.schema: the database was upgraded by a newer b24-mcp
    ├── StoreFull                      signin.records: too many registrations or sign-ins in flight
    ├── ForeignPortalError             signin.records: a person of another portal
    ├── SignInFailed                   signin.bitrix: what the person and their client are told
    └── LookupError
        └── NotSignedIn                signin.people: a tool call without a signed-in person

Private ones (`journal.file._UnusableError`, `portal.wire._TooLargeError`) never leave their module; the sandbox's
(`RestError`, `ConnectionDropped`) are the emulated portal's.
"""

from __future__ import annotations

from typing import Self

# Codes a retry can help with, whatever the HTTP status (compared upper-cased: the portal mixes cases).
_RETRYABLE_CODES = frozenset({"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "INTERNAL_SERVER_ERROR"})
# Codes no retry can help with, even when a proxy wraps them in a 5xx.
_FATAL_CODES = frozenset(
    {
        "NOT_FOUND",
        "ACCESS_DENIED",
        "100",
        "ALLOWED_ONLY_INTRANET_USER",
        "INVALID_CREDENTIALS",
        "NO_AUTH_FOUND",
        "INSUFFICIENT_SCOPE",
        "INVALID_TOKEN",
        "EXPIRED_TOKEN",
        "INVALID_REQUEST",
        "OVERLOAD_LIMIT",
        "PORTAL_DELETED",
        "USER_ACCESS_ERROR",
        "AUTHORIZATION_ERROR",
        "ERROR_METHOD_NOT_FOUND",
        "PAYMENT_REQUIRED",
    }
)


class B24Error(Exception):
    """A failure with a stable code, a description and whether retrying can help."""

    def __init__(
        self,
        code: str,
        description: str,
        *,
        http_status: int | None = None,
        retryable: bool = False,
        hint: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.http_status = http_status
        self.retryable = retryable
        # What to do about it, for the assistant; kept apart so `description` stays exactly what was sent.
        self.hint = hint
        # True when an earlier attempt of the same call may have reached the portal (see `with_lost_answer`).
        self.after_lost_answer = False

    def is_code(self, code: str) -> bool:
        """Compare the code case-insensitively, as the portal's codes come in both cases."""
        return self.code.upper() == code.upper()

    def with_lost_answer(self) -> Self:
        """A copy marked as following an attempt whose answer was lost (that attempt may have acted)."""
        marked = type(self).__new__(type(self))
        marked.__dict__.update(self.__dict__)
        marked.args = self.args
        marked.after_lost_answer = True
        return marked


class PortalError(B24Error):
    """The portal answered with an error body; `code` is its `error` exactly as sent (numbers as strings)."""

    def __init__(self, code: str, description: str, *, http_status: int | None, hint: str | None = None) -> None:
        retryable = portal_error_is_retryable(code, http_status)
        super().__init__(code, description, http_status=http_status, retryable=retryable, hint=hint)


class TransportError(B24Error):
    """No usable answer: `PORTAL_UNREACHABLE`, `PORTAL_TIMEOUT`, `BAD_PORTAL_RESPONSE` or `PORTAL_REDIRECT`.

    `maybe_sent` is true when the request may have reached the portal (the answer was lost on the way back),
    so a delete may have happened although we cannot tell from here.
    """

    def __init__(
        self,
        code: str,
        description: str,
        *,
        http_status: int | None = None,
        retryable: bool,
        maybe_sent: bool,
        hint: str | None = None,
    ) -> None:
        super().__init__(code, description, http_status=http_status, retryable=retryable, hint=hint)
        self.maybe_sent = maybe_sent


class AnswerTooLarge(TransportError):  # noqa: N818 (named for what the answer is, like its siblings' codes)
    """`BAD_PORTAL_RESPONSE` for an answer whose decoded body passed the size cap: reading stopped there."""


class Refusal(B24Error):  # noqa: N818 (a refusal is a decision, not an error of ours)
    """A decision of our own, taken before anything was deleted: nothing reached `crm.item.delete`."""

    def __init__(self, code: str, description: str, *, retryable: bool = False, hint: str | None = None) -> None:
        super().__init__(code, description, http_status=None, retryable=retryable, hint=hint)


def portal_error_is_retryable(code: str, http_status: int | None) -> bool:
    """Whether a retry can help with this portal error: by code first, by status only for unknown codes."""
    upper = code.upper()
    if upper in _RETRYABLE_CODES:
        return True
    if upper in _FATAL_CODES:
        return False
    return http_status is not None and http_status >= 500


def is_known_portal_code(code: str) -> bool:
    """Whether `code` (upper-cased) is one of the portal's codes this module knows by name."""
    return code in _RETRYABLE_CODES or code in _FATAL_CODES


def may_have_acted(error: B24Error) -> bool:
    """Whether the failed request may have done its work on the portal although no success came back."""
    if isinstance(error, TransportError):
        return error.maybe_sent
    if isinstance(error, PortalError):
        # A 5xx may come from a proxy after the portal acted; the rate limiter refuses before anything runs.
        return (error.http_status or 0) >= 500 and not error.is_code("QUERY_LIMIT_EXCEEDED")
    return False


class SettingsError(Exception):
    """Configuration that cannot work; each line names the variable and never shows a secret."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines
