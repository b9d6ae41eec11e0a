"""People (users.py): names in profile and user.current, and per-user permissions as the crm controller applies
them — crm.item.get and crm.item.delete refuse with 400 ACCESS_DENIED after the item is found, crm.item.list leaves
out what may not be read."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from b24_mcp.sandbox.emulator import Portal, User, Webhook
from b24_mcp.sandbox.seed import (
    PROJECTS_TYPE_ID,
    READONLY_USER_ID,
    SALES_USER_ID,
    SANDBOX_CLIENT_ID,
    SANDBOX_USER_ID,
    seeded_portal,
)
from emulator.emulator_helpers import GET_42, HOOK, ITEM_NOT_FOUND, NOSCOPE_HOOK, READONLY_HOOK, call, make_client

pytestmark = pytest.mark.anyio

ACCESS_DENIED = {"error": "ACCESS_DENIED", "error_description": "Access denied"}
READ_DENIED = {"error": "ACCESS_DENIED", "error_description": "You don't have permission to view this item."}


async def as_user(
    client: httpx2.AsyncClient, portal: Portal, user_id: int, method: str, params: dict[str, Any] | None = None
) -> httpx2.Response:
    """Call ``method`` with an OAuth token of ``user_id`` (scopes crm and user_brief)."""
    access, _ = portal.issue_tokens(SANDBOX_CLIENT_ID, user_id, frozenset({"crm", "user_brief"}))
    return await client.post(f"/rest/{method}", json={**(params or {}), "auth": access})


def listed_ids(response: httpx2.Response) -> list[int]:
    return [item["id"] for item in response.json()["result"]["items"]]


# ---------------------------------------------------------------------- names


async def test_profile_gives_the_webhook_users_name(client: httpx2.AsyncClient) -> None:
    result = (await call(client, "profile", hook=READONLY_HOOK)).json()["result"]
    assert result == {"ID": "7", "ADMIN": False, "NAME": "Rita", "LAST_NAME": "Reader"}


async def test_profile_gives_the_token_users_name(client: httpx2.AsyncClient, portal: Portal) -> None:
    result = (await as_user(client, portal, SALES_USER_ID, "profile")).json()["result"]
    assert result == {"ID": "3", "ADMIN": False, "NAME": "Sam", "LAST_NAME": "Sales"}


async def test_user_current_gives_name_email_and_user_type(client: httpx2.AsyncClient, portal: Portal) -> None:
    result = (await as_user(client, portal, SANDBOX_USER_ID, "user.current")).json()["result"]
    assert (result["ID"], result["NAME"], result["LAST_NAME"]) == ("1", "Sandbox", "Administrator")
    assert (result["EMAIL"], result["ACTIVE"], result["USER_TYPE"]) == ("admin@sandbox.test", True, "employee")


async def test_user_current_needs_a_user_scope(client: httpx2.AsyncClient) -> None:
    response = await call(client, "user.current", hook=HOOK)
    assert (response.status_code, response.json()["error"]) == (403, "insufficient_scope")


async def test_user_current_works_with_the_user_scope(client: httpx2.AsyncClient) -> None:
    response = await call(client, "user.current", hook=NOSCOPE_HOOK)
    assert response.json()["result"]["NAME"] == "Ned"


# ---------------------------------------------------------------------- delete permission


async def test_user_denied_deleting_a_type_gets_400_access_denied(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.deny(SANDBOX_USER_ID, "delete", 2)
    response = await call(client, "crm.item.delete", GET_42)
    assert (response.status_code, response.json()) == (400, ACCESS_DENIED)
    assert 42 in portal.items[2]


async def test_denial_for_a_type_leaves_other_types_deletable(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.deny(SANDBOX_USER_ID, "delete", 2)
    response = await call(client, "crm.item.delete", {"entityTypeId": 1, "id": 11})
    assert response.json()["result"] == []


async def test_denial_for_one_item_leaves_the_others_deletable(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.deny(SANDBOX_USER_ID, "delete", 2, 42)
    refused = await call(client, "crm.item.delete", GET_42)
    allowed = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 41})
    assert (refused.json(), allowed.json()["result"]) == (ACCESS_DENIED, [])


async def test_missing_item_is_not_found_before_permissions_are_checked(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    portal.deny(SANDBOX_USER_ID, "delete", 2)
    response = await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 999})
    assert response.json() == ITEM_NOT_FOUND


async def test_allow_lifts_a_denial(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.deny(SANDBOX_USER_ID, "delete", 2)
    portal.allow(SANDBOX_USER_ID, "delete", 2)
    assert (await call(client, "crm.item.delete", GET_42)).status_code == 200


async def test_denial_applies_to_batch_commands(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.deny(SANDBOX_USER_ID, "delete", 2, 42)
    cmd = {"a": "crm.item.delete?entityTypeId=2&id=42", "b": "crm.item.delete?entityTypeId=2&id=41"}
    result = (await call(client, "batch", {"cmd": cmd})).json()["result"]
    assert (result["result"], result["result_error"]) == ({"b": []}, {"a": ACCESS_DENIED})


async def test_russian_portal_says_access_denied_in_russian() -> None:
    portal = seeded_portal(rate_limit=None, language="ru")
    portal.deny(SANDBOX_USER_ID, "delete", 2)
    async with make_client(portal) as client:
        response = await call(client, "crm.item.delete", GET_42)
    assert response.json() == {"error": "ACCESS_DENIED", "error_description": "Доступ запрещен"}


# ---------------------------------------------------------------------- read permission


async def test_user_denied_reading_a_type_gets_400_with_the_view_text(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    portal.deny(SANDBOX_USER_ID, "read", 2)
    response = await call(client, "crm.item.get", GET_42)
    assert (response.status_code, response.json()) == (400, READ_DENIED)


async def test_list_of_a_type_the_user_may_not_read_is_empty_not_an_error(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    portal.deny(SANDBOX_USER_ID, "read", 2)
    body = (await call(client, "crm.item.list", {"entityTypeId": 2})).json()
    assert (body["result"], body["total"]) == ({"items": []}, 0)


async def test_list_leaves_out_single_items_the_user_may_not_read(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.deny(SANDBOX_USER_ID, "read", 2, 42)
    response = await call(client, "crm.item.list", {"entityTypeId": 2})
    assert listed_ids(response) == [40, 41, 43, 44, 45]
    assert response.json()["total"] == 5


async def test_denying_read_does_not_deny_delete(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.deny(SANDBOX_USER_ID, "read", 2, 42)
    assert (await call(client, "crm.item.delete", GET_42)).status_code == 200


# ---------------------------------------------------------------------- whose rights


async def test_token_calls_carry_their_users_permissions(client: httpx2.AsyncClient, portal: Portal) -> None:
    refused = await as_user(client, portal, SALES_USER_ID, "crm.item.delete", {"entityTypeId": 4, "id": 31})
    allowed = await as_user(client, portal, SALES_USER_ID, "crm.item.delete", {"entityTypeId": 3, "id": 21})
    hidden = await as_user(client, portal, SALES_USER_ID, "crm.item.list", {"entityTypeId": PROJECTS_TYPE_ID})
    assert (refused.json(), allowed.json()["result"]) == (ACCESS_DENIED, [])
    assert listed_ids(hidden) == []


async def test_one_users_denial_leaves_other_users_alone(client: httpx2.AsyncClient, portal: Portal) -> None:
    response = await as_user(client, portal, SANDBOX_USER_ID, "crm.item.delete", {"entityTypeId": 4, "id": 31})
    assert response.json()["result"] == []


async def test_webhook_rights_narrow_its_users_rights(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.add_webhook(Webhook(SANDBOX_USER_ID, "no-deletes", can_delete=False))
    through_webhook = await call(client, "crm.item.delete", GET_42, hook=f"/rest/{SANDBOX_USER_ID}/no-deletes/")
    with_own_token = await as_user(client, portal, SANDBOX_USER_ID, "crm.item.delete", GET_42)
    assert (through_webhook.json(), with_own_token.json()["result"]) == (ACCESS_DENIED, [])


async def test_webhook_of_an_unregistered_user_registers_them_with_its_rights(
    client: httpx2.AsyncClient, portal: Portal
) -> None:
    portal.add_webhook(Webhook(60, "hook60", can_read=False, name="Una", last_name="Known"))
    response = await as_user(client, portal, 60, "crm.item.get", GET_42)
    assert response.json() == READ_DENIED
    assert portal.users[60].name == "Una"


async def test_a_user_can_be_registered_with_permissions_up_front(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.add_user(User(61, "Pat", "Partial", can_delete=False))
    response = await as_user(client, portal, 61, "crm.item.delete", GET_42)
    assert response.json() == ACCESS_DENIED


def test_deny_for_an_unknown_user_is_refused(portal: Portal) -> None:
    with pytest.raises(ValueError, match="unknown user 404"):
        portal.deny(404, "delete", 2)


def test_seeded_read_only_user_may_read_but_not_delete(portal: Portal) -> None:
    rita = portal.users[READONLY_USER_ID]
    assert (rita.may("read", 2, 42), rita.may("delete", 2, 42)) == (True, False)
