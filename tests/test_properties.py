"""Property: whatever JSON an assistant sends, nothing is deleted without a valid token for exactly that item.

One server and one client serve every example of a property, as one server serves an assistant's calls; each example
has a portal of its own, freshly seeded. The number of examples is the Hypothesis profile's (conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from mcp import Client

from b24_mcp.sandbox.emulator import Portal
from b24_mcp.sandbox.link import sandbox_webhook
from b24_mcp.sandbox.seed import seeded_portal
from b24_mcp.sandbox.serve import sandbox_transport
from b24_mcp.serving.tools import build_server
from b24_mcp.settings import Settings
from helpers import make_app

pytestmark = pytest.mark.anyio

NAMES = ["entityTypeId", "id", "dryRun", "confirmationToken"]
VALID = "<valid token for deal 43>"
TAMPERED = "<tampered token for deal 43>"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=5,
)
plausible = {
    "entityTypeId": st.sampled_from([2, 3, 1038, 0, -1, 2**31, "2", 2.0, True]) | json_values,
    "id": st.sampled_from([42, 43, 1, 999, "43", 43.0, None]) | json_values,
    "dryRun": st.sampled_from([False, True, "false", 0, None]) | json_values,
    "confirmationToken": st.sampled_from([VALID, TAMPERED, "", "b24c1.x.y"]) | json_values,
}
near_valid = st.fixed_dictionaries(
    {
        "entityTypeId": st.sampled_from([2, 3, "2"]),
        "id": st.sampled_from([43, 42, 43.0]),
        "dryRun": st.sampled_from([False, "false", True]),
        "confirmationToken": st.sampled_from([VALID, TAMPERED]),
    }
)
arguments = (
    near_valid
    | st.fixed_dictionaries({}, optional={name: strategy for name, strategy in plausible.items()})
    | st.dictionaries(st.sampled_from([*NAMES, "force", "ID", "auth"]) | st.text(max_size=8), json_values, max_size=5)
)


def with_token(args: dict[str, Any], token: str) -> dict[str, Any]:
    """The arguments with the placeholders for a valid or a tampered token filled in."""
    real = dict(args)
    if real.get("confirmationToken") == VALID:
        real["confirmationToken"] = token
    elif real.get("confirmationToken") == TAMPERED:
        real["confirmationToken"] = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    return real


class PortalPerExample(httpx2.AsyncBaseTransport):
    """The emulator, in-process, of the example under way: `fresh()` seeds a new portal for the next one."""

    def __init__(self) -> None:
        self.fresh()

    def fresh(self) -> Portal:
        self.portal = seeded_portal()
        self._transport = sandbox_transport(self.portal)
        return self.portal

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await self._transport.handle_async_request(request)


Served = tuple[Client, PortalPerExample]


@pytest.fixture
async def served(make_settings: Callable[..., Settings]) -> AsyncIterator[Served]:
    """The server, with token confirmation and without client-side pacing (a property is no rate test), and a
    client connected to it, for every example of a test."""
    portals = PortalPerExample()
    settings = make_settings(confirm="token", rate_burst=10_000, rate_per_second=1000.0)
    async with Client(build_server(make_app(settings, sandbox_webhook(), portals))) as client:
        yield client, portals


async def attempt(
    served: Served, tool: str, previewed: dict[str, Any], args: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """On a fresh portal, preview `previewed` with `tool`, then send `args` (its token placeholders filled in); the
    deletes sent."""
    client, portals = served
    portal = portals.fresh()
    preview = await client.call_tool(tool, previewed)
    assert preview.structured_content is not None
    token = preview.structured_content["confirmationToken"]
    real = with_token(args, token)
    await client.call_tool(tool, real)
    return portal.calls_to("crm.item.delete"), real | {"_token": token}


# The fixture is the long-lived server; each example gets its own portal (attempt), so no state leaks between them.
ONE_SERVER = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@ONE_SERVER
@given(args=arguments)
@example(args={"entityTypeId": 2, "id": 43, "dryRun": False, "confirmationToken": VALID})
async def test_nothing_is_deleted_without_a_valid_token_for_that_item(args: dict[str, Any], served: Served) -> None:
    deletes, sent = await attempt(served, "crm_item_delete", {"entityTypeId": 2, "id": 43}, args)
    event("deleted" if deletes else "nothing deleted")
    if deletes:
        assert len(deletes) == 1
        assert set(args) <= set(NAMES)
        assert (type(sent["entityTypeId"]), type(sent["id"])) == (int, int)
        assert (sent["entityTypeId"], sent["id"], sent["dryRun"]) == (2, 43, False)
        assert sent["confirmationToken"] == sent["_token"]


batch_arguments = st.fixed_dictionaries(
    {},
    optional={
        "entityTypeId": st.sampled_from([2, 3, "2", 2.0]) | json_values,
        "ids": st.sampled_from([[43, 44], [44, 43], [43], [43, 43], "[43, 44]", [43.0, 44]]) | json_values,
        "dryRun": st.sampled_from([False, True, "false", 0]) | json_values,
        "confirmationToken": st.sampled_from([VALID, TAMPERED, "b24c1.x.y"]) | json_values,
    },
) | st.dictionaries(
    st.sampled_from(["entityTypeId", "ids", "dryRun", "confirmationToken", "halt", "cmd"]), json_values, max_size=5
)


@ONE_SERVER
@given(args=batch_arguments)
@example(args={"entityTypeId": 2, "ids": [44, 43], "dryRun": False, "confirmationToken": VALID})
async def test_nothing_is_deleted_in_bulk_without_a_valid_token_for_those_items(
    args: dict[str, Any], served: Served
) -> None:
    deletes, sent = await attempt(served, "crm_item_delete_batch", {"entityTypeId": 2, "ids": [43, 44]}, args)
    event("deleted" if deletes else "nothing deleted")
    if deletes:
        assert set(args) <= {"entityTypeId", "ids", "dryRun", "confirmationToken"}
        assert (sent["entityTypeId"], sent["dryRun"]) == (2, False)
        assert sorted(sent["ids"]) == [43, 44] if isinstance(sent["ids"], list) else sent["ids"] == "[43, 44]"
        assert sent["confirmationToken"] == sent["_token"]
        assert sorted(int(call.params["id"]) for call in deletes) == [43, 44]
