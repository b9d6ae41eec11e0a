"""Confirmation tokens: bound to portal, type, id and version; expiring; single use; unforgeable."""

from __future__ import annotations

import anyio
import pytest

from b24_mcp.deleting.confirmation import ConfirmationTokens, SpentInMemory
from b24_mcp.errors import Refusal

SECRET = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def tokens(
    clock: Clock | None = None,
    portal: str = "acme.bitrix24.com/1",
    secret: bytes = SECRET,
    monotonic: Clock | None = None,
) -> ConfirmationTokens:
    clock = clock or Clock()
    spent = SpentInMemory(300, clock=clock, monotonic=monotonic or Clock())
    return ConfirmationTokens(secret, portal=portal, ttl=300, clock=clock, spent=spent)


def spend(gate: ConfirmationTokens, token: str, entity_type_id: int = 2, item_id: int | str = 42) -> None:
    anyio.run(gate.consume, gate.check(token, entity_type_id, item_id))


def refused(gate: ConfirmationTokens, token: str, entity_type_id: int = 2, item_id: int | str = 42) -> Refusal:
    with pytest.raises(Refusal) as caught:
        spend(gate, token, entity_type_id, item_id)
    assert caught.value.code == "INVALID_CONFIRMATION_TOKEN"
    assert caught.value.retryable is False
    return caught.value


def test_a_fresh_token_carries_the_items_version() -> None:
    gate = tokens()
    token, _ = gate.issue(2, 42, "2026-03-08T14:05:00+03:00")
    assert gate.check(token, 2, 42).version == "2026-03-08T14:05:00+03:00"


def test_the_expiry_is_ttl_seconds_ahead() -> None:
    clock = Clock()
    _, expires = tokens(clock).issue(2, 42, "t")
    assert expires.timestamp() == clock.now + 300


def test_a_token_for_another_item_is_refused() -> None:
    gate = tokens()
    token, _ = gate.issue(2, 42, "t")
    assert "id 42" in refused(gate, token, 2, 43).description


def test_a_token_for_another_type_is_refused() -> None:
    gate = tokens()
    token, _ = gate.issue(2, 42, "t")
    refused(gate, token, 3, 42)


def test_a_token_from_another_portal_is_refused() -> None:
    token, _ = tokens(portal="other.bitrix24.com/1").issue(2, 42, "t")
    refused(tokens(), token)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token, _ = tokens(secret=b"x" * 32).issue(2, 42, "t")
    refused(tokens(), token)


def test_an_expired_token_is_refused() -> None:
    clock = Clock()
    gate = tokens(clock)
    token, _ = gate.issue(2, 42, "t")
    clock.now += 301
    assert "expired" in refused(gate, token).description


def test_a_token_works_once() -> None:
    gate = tokens()
    token, _ = gate.issue(2, 42, "t")
    spend(gate, token)
    assert "already used" in refused(gate, token).description


def test_a_spent_token_stays_spent_when_the_wall_clock_steps_forward_and_back() -> None:
    clock = Clock()
    gate = tokens(clock)
    token, _ = gate.issue(2, 42, "t")
    spend(gate, token)
    clock.now += 3600  # the wall clock jumps past the expiry: the spent list is pruned here...
    other, _ = gate.issue(2, 43, "t")
    spend(gate, other, 2, 43)
    clock.now -= 3600  # ...and back: the token looks unexpired again
    assert "already used" in refused(gate, token).description


@pytest.mark.parametrize("part", [0, 1, 2])
def test_a_tampered_token_is_refused(part: int) -> None:
    gate = tokens()
    token, _ = gate.issue(2, 42, "t")
    pieces = token.split(".")
    pieces[part] = pieces[part][:-2] + ("AA" if not pieces[part].endswith("AA") else "BB")
    refused(gate, ".".join(pieces))


@pytest.mark.parametrize("garbage", ["", "b24c1", "b24c1..", "not a token", "b24c1.e30.", "💥" * 10])
def test_garbage_is_refused(garbage: str) -> None:
    refused(tokens(), garbage)


def test_a_single_item_token_is_no_batch_token() -> None:
    gate = tokens()
    token, _ = gate.issue(2, 42, "t")
    refused(gate, token, 2, "batch")


def test_a_token_from_before_a_restart_says_tokens_do_not_survive_one_without_a_secret() -> None:
    token, _ = tokens(secret=b"x" * 32).issue(2, 42, "t")
    assert (
        "do not survive a restart of the server unless B24_CONFIRM_SECRET is set"
        in refused(tokens(), token).description
    )


def test_with_a_lasting_secret_a_foreign_token_is_not_blamed_on_a_restart() -> None:
    token, _ = tokens(secret=b"x" * 32).issue(2, 42, "t")
    lasting = ConfirmationTokens(SECRET, portal="acme.bitrix24.com/1", ttl=300, lasting=True)
    assert "restart" not in refused(lasting, token).description
