"""The confirmation policy: which way a real deletion must be confirmed, and the refusals it gives."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from b24_mcp.errors import Refusal
from b24_mcp.settings import ConfirmMode


class Route(StrEnum):
    """The way one deletion is to be confirmed."""

    ASK = "ask"  # ask the person through MCP elicitation
    TOKEN = "token"  # require a signed token from a preview
    NONE = "none"  # no gate (B24_CONFIRM=none)
    UNSUPPORTED = "unsupported"  # must ask, but the client cannot be asked


class Answer(StrEnum):
    """What came of asking the person."""

    ACCEPTED = "accepted"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    NOT_ASKED = "not_asked"  # the question could not be put (the item could not be read, a guardrail applies)


@dataclass(frozen=True)
class Consent:
    """Everything the gate knows about one `dryRun: false` call."""

    route: Route
    token: str | None = None
    answer: Answer | None = None
    shown: str | None = None  # the version of the item(s) the person was asked about


@dataclass(frozen=True)
class Question:
    """What the person is asked, and the version of the item(s) it describes."""

    text: str
    version: str


class ShownVersions:
    """Which version each pending question showed, from the question to the deletion of the same request.

    The person may take a while to answer; if the item changes meanwhile, what they agreed to is not what would
    be deleted. Bounded: an abandoned question is forgotten after `limit` newer ones.
    """

    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        self._versions: dict[object, str] = {}

    def remember(self, key: object, version: str) -> None:
        self._versions.pop(key, None)
        self._versions[key] = version
        while len(self._versions) > self._limit:
            del self._versions[next(iter(self._versions))]

    def pop(self, key: object) -> str | None:
        return self._versions.pop(key, None)


def changed_since_asked(subject: str) -> Refusal:
    return Refusal(
        "ITEM_CHANGED",
        f"{subject} changed on the portal while the person was being asked, so what they agreed to is not what "
        "would be deleted. Nothing was deleted; call again to ask about the current version.",
    )


def route_for(mode: ConfirmMode, *, can_ask: bool) -> Route:
    """Decide how a deletion is confirmed under `mode`, given whether the client can be asked."""
    if mode is ConfirmMode.NONE:
        return Route.NONE
    if mode is ConfirmMode.TOKEN:
        return Route.TOKEN
    if can_ask:
        return Route.ASK
    return Route.UNSUPPORTED if mode is ConfirmMode.ELICIT else Route.TOKEN


def mode_hint(mode: ConfirmMode, *, can_ask: bool | None = None) -> str:
    """One sentence for the assistant on how deletions are confirmed here."""
    if mode is ConfirmMode.NONE:
        return "Confirmation is switched off on this server (B24_CONFIRM=none): dryRun: false deletes at once."
    if mode is ConfirmMode.TOKEN or (mode is ConfirmMode.AUTO and can_ask is False):
        return (
            "To delete, call again with dryRun: false and the confirmationToken from a preview of the same item; "
            "show the person the preview first."
        )
    if mode is ConfirmMode.ELICIT:
        return "To delete, call again with dryRun: false: the person is asked to confirm in their client."
    if can_ask:
        return "To delete, call again with dryRun: false: the person is asked to confirm in their client."
    return (
        "To delete, call again with dryRun: false; the person is asked to confirm when their client supports "
        "it, otherwise pass the confirmationToken from a preview of the same item."
    )


def confirmation_required() -> Refusal:
    return Refusal(
        "CONFIRMATION_REQUIRED",
        "A deletion needs confirmation: call with dryRun: true to preview the item, show the person what would "
        "be deleted, then call with dryRun: false and the confirmationToken from that preview.",
    )


def not_asked() -> Refusal:
    return Refusal(
        "CONFIRMATION_REQUIRED",
        "The person could not be asked to confirm this deletion; call again to ask, or preview first.",
    )


def elicitation_unsupported() -> Refusal:
    return Refusal(
        "ELICITATION_UNSUPPORTED",
        "This server requires the person to confirm each deletion (B24_CONFIRM=elicit), and this client cannot "
        "ask them (no elicitation capability). Use a client that supports elicitation; previews still work.",
    )


@dataclass(frozen=True)
class Guardrails:
    """Limits an administrator sets on what can be previewed or deleted at all."""

    read_only: bool = False
    allowed_types: frozenset[int] | None = None

    def check_type(self, entity_type_id: int) -> None:
        """Refuse a type outside `B24_ALLOWED_ENTITY_TYPES` before the portal is contacted."""
        if self.allowed_types is not None and entity_type_id not in self.allowed_types:
            allowed = ", ".join(str(t) for t in sorted(self.allowed_types))
            raise Refusal(
                "ENTITY_TYPE_NOT_ALLOWED",
                f"This server only works on entityTypeId {allowed} (B24_ALLOWED_ENTITY_TYPES); "
                f"{entity_type_id} is not allowed. Do not retry with this type.",
            )

    def check_delete(self, entity_type_id: int) -> None:
        """Refuse any real deletion in read-only mode, and types outside the allowed list."""
        if self.read_only:
            raise Refusal(
                "READ_ONLY",
                "This server is read-only (B24_READ_ONLY=true): previews work, deletions are refused. "
                "Do not retry; an administrator must change the setting.",
            )
        self.check_type(entity_type_id)

    def describe(self) -> str:
        """The guardrails in force, in words, or an empty string."""
        parts = []
        if self.read_only:
            parts.append("read-only: previews only, deletions are refused")
        if self.allowed_types is not None:
            parts.append("allowed entityTypeIds: " + ", ".join(str(t) for t in sorted(self.allowed_types)))
        return "; ".join(parts)
