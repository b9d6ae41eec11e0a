"""The confirmation gate: the one rule every path to `crm.item.delete` passes, for one item and for a set alike.

A real deletion is confirmed one way (the route), decided once per call from the mode and the client:
the person's answer to a question (which names the version it showed), a signed token from a preview, or
nothing at all when an administrator chose `B24_CONFIRM=none`. `pass_gate` applies the rule to a `Target`:
what differs between one item and a set is only how they are read and named.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

from b24_mcp.deleting.approval import ApprovalDesk, ApprovalPending, ApprovalState
from b24_mcp.deleting.confirmation import ConfirmationTokens
from b24_mcp.errors import B24Error, Refusal
from b24_mcp.journal.record import ConfirmedBy
from b24_mcp.settings import ConfirmMode


class Reach(StrEnum):
    """Whether the person can be asked through this client."""

    ASKABLE = "askable"
    NO_CAPABILITY = "no_capability"  # the client did not declare form elicitation
    NO_BACK_CHANNEL = "no_back_channel"  # a 2025-11-25 client on a stateless HTTP server: no way to ask mid-call


class Route(StrEnum):
    """The way one deletion is to be confirmed."""

    ASK = "ask"  # ask the person through MCP elicitation
    TOKEN = "token"  # require a signed token from a preview
    PAGE = "page"  # require a preview's token and the person's approval of it on this server's page
    NONE = "none"  # no gate (B24_CONFIRM=none)
    UNSUPPORTED = "unsupported"  # must ask, but the client cannot be asked


class Answer(StrEnum):
    """What came of asking the person. Only a JSON `true` is a yes."""

    ACCEPTED = "accepted"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    UNFIT = "unfit"  # accepted, but with an answer that does not fit the form ("yes", 1): refused like a no
    NOT_ASKED = "not_asked"  # the question could not be put (the item could not be read, a guardrail applies)


@dataclass(frozen=True)
class Question:
    """What the person is asked, and the version of the item(s) it describes."""

    text: str
    version: str


@dataclass(frozen=True)
class Plan:
    """Decided once per call, before the tool body: the route, and the question when the route asks."""

    route: Route
    reach: Reach
    question: Question | None = None


@dataclass(frozen=True)
class Consent:
    """Everything the gate knows about one `dryRun: false` call."""

    route: Route
    token: str | None = None
    answer: Answer | None = None
    shown: str | None = None  # the version the person was asked about
    reach: Reach = Reach.ASKABLE


def route_for(mode: ConfirmMode, reach: Reach, *, page: bool = False) -> Route:
    """Decide how a deletion is confirmed under `mode`, given whether the client can be asked and whether this
    server has an approval page (`page`: sign-in)."""
    if mode is ConfirmMode.NONE:
        return Route.NONE
    if mode is ConfirmMode.TOKEN:
        return Route.TOKEN
    if mode is ConfirmMode.PAGE:
        return Route.PAGE
    if reach is Reach.ASKABLE:
        return Route.ASK
    if mode is ConfirmMode.ELICIT:
        return Route.UNSUPPORTED
    return Route.PAGE if page else Route.TOKEN


def mode_hint(mode: ConfirmMode, noun: str, reach: Reach | None = None) -> str:
    """One sentence for the assistant on how deletions are confirmed here; `noun` is `item` or `ids`."""
    with_token = f"the confirmationToken from a preview of the same {noun}"
    if mode is ConfirmMode.NONE:
        return "Confirmation is switched off on this server (B24_CONFIRM=none): dryRun: false deletes at once."
    if mode is ConfirmMode.PAGE:
        return PAGE_HINT
    if mode is ConfirmMode.TOKEN or (mode is ConfirmMode.AUTO and reach not in (None, Reach.ASKABLE)):
        hint = f"To delete, call again with dryRun: false and {with_token}; show the person the preview first."
        return hint + (_NO_BACK_CHANNEL if reach is Reach.NO_BACK_CHANNEL and mode is ConfirmMode.AUTO else "")
    if mode is ConfirmMode.ELICIT or reach is Reach.ASKABLE:
        return "To delete, call again with dryRun: false: the person is asked to confirm in their client."
    return (
        "To delete, call again with dryRun: false; the person is asked to confirm when their client supports "
        f"it, otherwise pass {with_token}."
    )


PAGE_HINT = (
    "Every deletion is approved by the person on this server's own page: a preview gives an approvalUrl; show it "
    "to the person, and once they approved in their browser, call again with dryRun: false and the "
    "confirmationToken of that preview."
)
_NO_BACK_CHANNEL = (
    " (This stateless HTTP server cannot ask the person on a 2025-11-25 connection, although the client can "
    "answer questions, so a token is required instead.)"
)


def confirmation_required(noun: str, reach: Reach = Reach.ASKABLE) -> Refusal:
    return Refusal(
        "CONFIRMATION_REQUIRED",
        f"A deletion needs confirmation: call with dryRun: true to preview the {noun}, show the person what would "
        "be deleted, then call with dryRun: false and the confirmationToken from that preview."
        + (_NO_BACK_CHANNEL if reach is Reach.NO_BACK_CHANNEL else ""),
    )


UNFIT_NOTE = "the answer did not fit the form (only a JSON true or false is an answer)"


def not_confirmed(answer: Answer, what: str) -> str:
    """A result's message when the person did not confirm the deletion of `what` (an item, or a count of them)."""
    if answer is Answer.UNFIT:
        return (
            f"The person's answer did not fit the form (only a JSON true or false is an answer), so the deletion of "
            f"{what} was refused; nothing was deleted. Ask again only if the person wants it."
        )
    verb = "declined" if answer is Answer.DECLINED else "cancelled"
    return f"The person {verb} the deletion of {what}; nothing was deleted. Do not ask again unless they say so."


def not_asked() -> Refusal:
    return Refusal(
        "CONFIRMATION_REQUIRED",
        "The person could not be asked to confirm this deletion; call again to ask, or preview first.",
    )


def elicitation_unsupported(reach: Reach) -> Refusal:
    why = (
        "this stateless HTTP server cannot ask on a 2025-11-25 connection (no back channel)"
        if reach is Reach.NO_BACK_CHANNEL
        else "this client cannot ask them (no elicitation capability)"
    )
    return Refusal(
        "ELICITATION_UNSUPPORTED",
        f"This server requires the person to confirm each deletion (B24_CONFIRM=elicit), and {why}. Use a client "
        "that supports elicitation; previews still work.",
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


class Versioned(Protocol):
    """What the gate needs of a reading: the version a confirmation is bound to."""

    @property
    def version(self) -> str: ...


S = TypeVar("S", bound=Versioned)


@dataclass(frozen=True)
class Target(Generic[S]):
    """What is to be deleted, as the gate sees it: how to read it, and the words for its refusals."""

    entity_type_id: int
    subject: str  # what a token names: the item id, or the set's digest name
    noun: str  # "item" or "ids": "a preview of the same item"
    read: Callable[[], Awaitable[S]]
    changed_since_preview: Callable[[str, S], Refusal]  # (the version previewed, the reading now)
    changed_since_asked: Callable[[S], Refusal]


@dataclass(frozen=True)
class Passed(Generic[S]):
    """The gate let the deletion through: the target as it is now, and how it was confirmed."""

    reading: S
    by: ConfirmedBy


@dataclass(frozen=True)
class Declined(Generic[S]):
    """The person said no (dismissed the question, or gave an answer that does not fit the form); the reading when
    it could be made."""

    reading: S | None
    answer: Answer
    by: ConfirmedBy = ConfirmedBy.ELICITATION  # how the person was asked


async def pass_gate(
    consent: Consent,
    target: Target[S],
    tokens: ConfirmationTokens,
    guardrails: Guardrails,
    approvals: ApprovalDesk | None = None,
) -> Passed[S] | Declined[S]:
    """Apply the confirmation rule; raise a `Refusal` (or the portal's error reading the target) when it fails.

    A token is spent only once the target was read and found unchanged, right before the deletion is sent.
    """
    guardrails.check_delete(target.entity_type_id)
    if consent.route is Route.UNSUPPORTED:
        raise elicitation_unsupported(consent.reach)
    if consent.route is Route.PAGE:
        return await _pass_page(consent, target, tokens, approvals)
    if consent.route is Route.TOKEN:
        if not consent.token:
            raise confirmation_required(target.noun, consent.reach)
        claim = tokens.check(consent.token, target.entity_type_id, target.subject)
        reading = await target.read()
        if reading.version != claim.version:
            raise target.changed_since_preview(claim.version, reading)
        await tokens.consume(claim)
        return Passed(reading, ConfirmedBy.TOKEN)
    if consent.route is Route.NONE:
        return Passed(await target.read(), ConfirmedBy.NONE)
    if consent.answer is Answer.ACCEPTED:
        reading = await target.read()
        if consent.shown is None:
            raise not_asked()
        if reading.version != consent.shown:
            raise target.changed_since_asked(reading)
        return Passed(reading, ConfirmedBy.ELICITATION)
    if consent.answer in (Answer.DECLINED, Answer.CANCELLED, Answer.UNFIT):
        try:
            found: S | None = await target.read()
        except B24Error:
            found = None
        return Declined(found, consent.answer)
    # The question was not put: surface why (the target's own error), or ask for another try.
    await target.read()
    raise not_asked()


async def _pass_page(
    consent: Consent, target: Target[S], tokens: ConfirmationTokens, approvals: ApprovalDesk | None
) -> Passed[S] | Declined[S]:
    """The page's route: the preview's token, approved by the person on the page for exactly what it covers."""
    if not consent.token:
        raise confirmation_required(target.noun)
    claim = tokens.check(consent.token, target.entity_type_id, target.subject)
    if approvals is None:  # no page on this server: nothing can approve it
        raise Refusal("APPROVAL_UNAVAILABLE", "This server has no approval page (B24_CONFIRM=page needs sign-in).")
    if consent.answer in (Answer.DECLINED, Answer.CANCELLED):  # the client's URL-mode answer: not opened
        return Declined(await _read_or_none(target), consent.answer, ConfirmedBy.PAGE)
    state = await approvals.state(consent.token)
    if state is None or state is ApprovalState.PENDING:
        raise ApprovalPending(approvals.url(consent.token))
    if state is ApprovalState.DECLINED:
        await tokens.consume(claim)
        return Declined(await _read_or_none(target), Answer.DECLINED, ConfirmedBy.PAGE)
    reading = await target.read()
    if reading.version != claim.version:
        raise target.changed_since_preview(claim.version, reading)
    await tokens.consume(claim)
    return Passed(reading, ConfirmedBy.PAGE)


async def _read_or_none(target: Target[S]) -> S | None:
    try:
        return await target.read()
    except B24Error:
        return None
