"""Keys from B24_CONFIRM_SECRET, one derivation per purpose (b24_mcp.secure.keys): what earlier code signed or
sealed still opens (the values below were written by the code before the derivations moved there)."""

from __future__ import annotations

from b24_mcp.deleting.confirmation import ConfirmationTokens
from b24_mcp.secure.keys import confirmation_key, grants_key, people_key, request_state_key
from b24_mcp.secure.sealing import Sealer

SECRET = b"0123456789abcdef0123456789abcdef-pinned"
SEALED_GRANT = "s1.2wo68lGj7WrcYiCfHCE2ugxd3aqXHc3eUmeD0Sx7ok7u1YSeiqkYY7Ppof4WUaA="
SEALED_PERSON = "s1.pYRpQf-gJqHA1EYzDBaGZYTsTOJryYmDQmgbotdtKg8jIql5yuj8g-ORQYJsxlU="
ISSUED_TOKEN = (
    "b24c1.eyJ0IjoyLCJpIjoiNDIiLCJ1IjoiMjAyNi0wMS0wMVQwMDowMDowMCswMDowMCIsIngiOjE5MDAwMDA2MDAsIm4iOiIwOWNmZmZm"
    "NDZlNTdlMWE1In0._28Td7fTRAz3_3WIKSkbpFULEnLC5YXKqcol9RYBHio"
)


def test_a_grant_sealed_before_opens_with_the_grants_key() -> None:
    opened = Sealer(grants_key(SECRET)).open(SEALED_GRANT, "grant:acme.bitrix24.com:app")
    assert opened == "grant-refresh-token"


def test_a_persons_token_sealed_before_opens_with_the_people_key() -> None:
    assert Sealer(people_key(SECRET)).open(SEALED_PERSON, "person:7") == "person-access-token"


def test_the_grants_and_people_keys_differ_so_neither_opens_the_others_rows() -> None:
    assert grants_key(SECRET) != people_key(SECRET)
    assert Sealer(people_key(SECRET)).open(SEALED_GRANT, "grant:acme.bitrix24.com:app") is None


def test_a_confirmation_token_issued_before_is_still_genuine() -> None:
    tokens = ConfirmationTokens(
        confirmation_key(SECRET), portal="acme.bitrix24.com#1", ttl=600, clock=lambda: 1_900_000_000.0
    )
    claim = tokens.check(ISSUED_TOKEN, 2, 42)
    assert claim.version == "2026-01-01T00:00:00+00:00"


def test_the_request_state_key_is_the_labelled_sha256_replicas_already_share() -> None:
    expected = "da6fcb436a2066f20ba55b6c6139db14d223db1fde53ab7c5955bca17a777de3"
    assert request_state_key(SECRET).hex() == expected
