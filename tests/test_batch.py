"""`crm_item_delete_batch`: many items, one confirmation, `batch` requests of 50, each item journaled."""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from b24_mcp.bulk.sets import BulkDeletion
from b24_mcp.deleting.gate import Consent, Route
from b24_mcp.deleting.item import ItemDeletion
from b24_mcp.sandbox.emulator import Fault, Portal
from b24_mcp.settings import Settings
from bulk_helpers import https_client
from helpers import Connect, TLSFiles, read_journal

pytestmark = pytest.mark.anyio

TOOL = "crm_item_delete_batch"
FIRST = 5000


@pytest.fixture
def deals(portal: Portal) -> list[int]:
    """120 test deals, ids 5000..5119."""
    for offset in range(120):
        portal.add_item(2, {"id": FIRST + offset, "title": f"Test deal {offset}", "stageId": "NEW"})
    portal.calls.clear()
    return list(range(FIRST, FIRST + 120))


def requests(portal: Portal) -> list[str]:
    """The HTTP requests the portal received (batch sub-commands not counted)."""
    return [call.method for call in portal.calls if not call.via_batch]


async def call(connect: Connect, arguments: dict[str, Any], **options: Any) -> CallToolResult:
    client_options = options.pop("client", None)
    async with connect(client=client_options, **options) as client:
        return await client.call_tool(TOOL, arguments)


async def preview_and_delete(connect: Connect, ids: list[int], **options: Any) -> dict[str, Any]:
    async with connect(**options) as client:
        preview = await client.call_tool(TOOL, {"entityTypeId": 2, "ids": ids})
        assert preview.structured_content is not None
        token = preview.structured_content["confirmationToken"]
        done = await client.call_tool(
            TOOL, {"entityTypeId": 2, "ids": ids, "dryRun": False, "confirmationToken": token}
        )
    assert done.structured_content is not None
    data: dict[str, Any] = {**done.structured_content, "isError": done.is_error}
    return data


async def test_the_preview_lists_found_and_missing_ids_with_one_token(
    connect: Connect, portal: Portal, deals: list[int]
) -> None:
    result = await call(connect, {"entityTypeId": 2, "ids": [*deals[:3], 999_999, 42]})
    data = result.structured_content
    assert data is not None and result.is_error is False
    assert data["status"] == "preview"
    assert data["found"] == [
        {"id": FIRST, "title": "Test deal 0"},
        {"id": FIRST + 1, "title": "Test deal 1"},
        {"id": FIRST + 2, "title": "Test deal 2"},
        {"id": 42, "title": "Acme renewal"},
    ]
    assert data["missing"] == [999_999]
    assert data["confirmationToken"].startswith("b24c1.")
    assert requests(portal) == ["batch"]
    assert portal.calls_to("crm.item.delete") == []


async def test_120_ids_take_one_request_to_preview_and_four_to_delete(
    connect: Connect, portal: Portal, deals: list[int]
) -> None:
    async with connect() as client:
        preview = await client.call_tool(TOOL, {"entityTypeId": 2, "ids": deals})
        assert requests(portal) == ["batch"]
        portal.calls.clear()
        assert preview.structured_content is not None
        token = preview.structured_content["confirmationToken"]
        done = await client.call_tool(
            TOOL, {"entityTypeId": 2, "ids": deals, "dryRun": False, "confirmationToken": token}
        )
    assert requests(portal) == ["batch"] * 4  # one read of all 120 to check the versions, three of deletes
    assert len(portal.calls_to("crm.item.list")) == 3  # the check: 50 ids to a command
    assert len(portal.calls_to("crm.item.delete")) == 120
    assert done.structured_content is not None
    assert (done.structured_content["status"], done.structured_content["deleted"]) == ("deleted", 120)


async def test_500_ids_end_to_end_take_twelve_requests_within_the_portals_burst(
    make_settings: Callable[..., Settings], webhook_url: str, tls: TLSFiles, portal: Portal
) -> None:
    ids = list(range(20_000, 20_500))
    for item_id in ids:
        portal.add_item(2, {"id": item_id, "title": f"Imported deal {item_id}", "stageId": "NEW"})
    portal.calls.clear()
    connect = https_client(make_settings, webhook_url, tls)
    started = time.perf_counter()
    result = await preview_and_delete(connect, ids, rate_burst=50, rate_per_second=2.0)
    assert (result["status"], result["deleted"]) == ("deleted", 500)
    # One request to preview, one to check the 500 versions again, ten of 50 deletes; no pacing needed.
    assert requests(portal) == ["batch"] * 12
    assert [call.error for call in portal.calls].count("QUERY_LIMIT_EXCEEDED") == 0
    assert time.perf_counter() - started < 5


async def test_every_item_is_journaled_like_a_single_deletion(
    connect: Connect, portal: Portal, deals: list[int], journal_path: Path
) -> None:
    snapshot = dict(portal.items[2][FIRST])
    await preview_and_delete(connect, deals[:60])
    entries = read_journal(journal_path)
    assert [entry["event"] for entry in entries] == ["intent"] * 50 + ["deleted"] * 50 + ["intent"] * 10 + [
        "deleted"
    ] * 10
    first = [entry for entry in entries if entry["id"] == FIRST]
    assert [entry["item"] for entry in first] == [snapshot, snapshot]
    assert {entry["confirmation"] for entry in entries} == {"token"}


async def test_a_failed_item_does_not_stop_the_others(connect: Connect, portal: Portal, deals: list[int]) -> None:
    portal.undeletable[(2, FIRST + 1)] = ("CRM_ITEM_HAS_RUNNING_WORKFLOWS", "Workflows are running")
    result = await preview_and_delete(connect, deals[:5])
    assert (result["status"], result["deleted"], result["failed"], result["isError"]) == ("partial", 4, 1, False)
    failed = [entry for entry in result["results"] if entry["status"] == "error"]
    assert failed == [
        {
            "id": FIRST + 1,
            "status": "error",
            "error": "CRM_ITEM_HAS_RUNNING_WORKFLOWS",
            "error_description": "Workflows are running",
        }
    ]
    assert FIRST + 1 in portal.items[2] and FIRST not in portal.items[2]


async def test_an_id_the_preview_reported_missing_is_listed_missing_and_the_rest_is_deleted(
    connect: Connect, deals: list[int]
) -> None:
    result = await preview_and_delete(connect, [*deals[:3], 999_999])
    assert (result["status"], result["deleted"], result["failed"], result["missing"]) == ("deleted", 3, 0, [999_999])
    assert [(entry["id"], entry["status"]) for entry in result["results"]] == [(item, "deleted") for item in deals[:3]]
    assert "failed" not in result["message"] and "not included: 999999" in result["message"]


async def test_an_item_present_at_the_preview_but_not_found_when_deleted_is_a_failure(
    connect: Connect, portal: Portal, deals: list[int]
) -> None:
    portal.undeletable[(2, FIRST + 1)] = ("NOT_FOUND", "Not found")
    result = await preview_and_delete(connect, [*deals[:3], 999_999])
    assert (result["status"], result["deleted"], result["failed"], result["missing"]) == ("partial", 2, 1, [999_999])
    assert [entry for entry in result["results"] if entry["status"] == "error"] == [
        {"id": FIRST + 1, "status": "error", "error": "NOT_FOUND", "error_description": "Not found"}
    ]


async def test_a_global_failure_halts_the_rest(
    service: ItemDeletion, portal: Portal, deals: list[int], journal_path: Path
) -> None:
    bulk = BulkDeletion(service.app)

    async def fail_next_batch(done: int, total: int, message: str) -> None:
        portal.inject(
            "batch",
            Fault(
                status=401, json={"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}
            ),
        )

    result = await bulk.delete(2, deals, Consent(route=Route.NONE), fail_next_batch)
    assert (result.status, result.deleted, result.failed, result.remaining) == ("partial", 50, 0, 70)
    assert result.results is not None
    assert {entry.error for entry in result.results if entry.status == "error"} == {"INVALID_CREDENTIALS"}
    assert "stopped" in result.message
    assert len(portal.calls_to("crm.item.delete")) == 50
    events = [entry["event"] for entry in read_journal(journal_path)]
    assert events.count("intent") == 100 and events.count("error") == 50 and events.count("deleted") == 50


def deleting(params: dict[str, Any]) -> bool:
    """A batch of deletes, not of reads."""
    return "crm.item.delete" in json.dumps(params)


async def test_nothing_deleted_because_of_an_error_is_an_error_result(
    connect: Connect, portal: Portal, deals: list[int]
) -> None:
    for _ in range(4):  # the first attempt and its three retries
        limit = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
        portal.inject("batch", Fault(status=503, json=limit), when=deleting)
    result = await call(connect, {"entityTypeId": 2, "ids": deals[:3], "dryRun": False}, confirm="none")
    data = result.structured_content
    assert data is not None and result.is_error is True
    assert (data["status"], data["deleted"], data["failed"], data["remaining"]) == ("error", 0, 0, 3)
    assert (data["error"], data["retryable"]) == ("QUERY_LIMIT_EXCEEDED", True)
    assert all(FIRST + offset in portal.items[2] for offset in range(3))


@pytest.mark.parametrize(
    ("change", "same_second"),
    [({"title": "Renamed"}, False), ({"stageId": "WON"}, True), ({"opportunity": 999_999.0}, True)],
    ids=["renamed-later", "stage-within-the-second", "amount-within-the-second"],
)
async def test_an_item_changed_since_the_preview_refuses_the_whole_set(
    connect: Connect, portal: Portal, deals: list[int], change: dict[str, object], same_second: bool
) -> None:
    async with connect() as client:
        preview = await client.call_tool(TOOL, {"entityTypeId": 2, "ids": deals[:3]})
        assert preview.structured_content is not None
        portal.touch(2, FIRST + 1, same_second=same_second, **change)  # within the second: updatedTime stays
        done = await client.call_tool(
            TOOL,
            {
                "entityTypeId": 2,
                "ids": deals[:3],
                "dryRun": False,
                "confirmationToken": preview.structured_content["confirmationToken"],
            },
        )
    assert done.structured_content is not None
    assert (done.is_error, done.structured_content["error"]) == (True, "ITEM_CHANGED")
    assert portal.calls_to("crm.item.delete") == []


async def test_a_set_changed_within_the_same_second_while_the_person_was_asked_is_not_deleted(
    connect: Connect, portal: Portal, deals: list[int]
) -> None:
    class Meanwhile(Person):
        async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
            portal.touch(2, FIRST + 1, same_second=True, stageId="WON")
            return await super().__call__(context, params)

    result = await call(
        connect,
        {"entityTypeId": 2, "ids": deals[:3], "dryRun": False},
        confirm="auto",
        client={"elicitation_callback": Meanwhile("accept"), "mode": "legacy"},
    )
    assert result.structured_content is not None and result.structured_content["error"] == "ITEM_CHANGED"
    assert portal.calls_to("crm.item.delete") == []


async def test_a_single_item_token_does_not_confirm_a_batch(connect: Connect, portal: Portal, deals: list[int]) -> None:
    async with connect() as client:
        single = await client.call_tool("crm_item_delete", {"entityTypeId": 2, "id": FIRST})
        assert single.structured_content is not None
        done = await client.call_tool(
            TOOL,
            {
                "entityTypeId": 2,
                "ids": [FIRST],
                "dryRun": False,
                "confirmationToken": single.structured_content["confirmationToken"],
            },
        )
    assert done.structured_content is not None and done.structured_content["error"] == "INVALID_CONFIRMATION_TOKEN"
    assert portal.calls_to("crm.item.delete") == []


async def test_without_a_token_nothing_is_sent(connect: Connect, portal: Portal, deals: list[int]) -> None:
    result = await call(connect, {"entityTypeId": 2, "ids": deals[:3], "dryRun": False})
    assert result.structured_content is not None and result.structured_content["error"] == "CONFIRMATION_REQUIRED"
    assert portal.calls == []


async def test_progress_is_reported_after_each_batch(connect: Connect, portal: Portal, deals: list[int]) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with connect(confirm="none") as client:
        await client.call_tool(TOOL, {"entityTypeId": 2, "ids": deals, "dryRun": False}, progress_callback=on_progress)
    assert seen == [
        (50, 120, "50 of 120 deleted"),
        (100, 120, "100 of 120 deleted"),
        (120, 120, "120 of 120 deleted"),
    ]


async def test_a_lost_answer_of_a_delete_batch_is_confirmed_by_absence(
    connect: Connect, portal: Portal, deals: list[int], journal_path: Path
) -> None:
    lost = Fault(status=502, body=b"<html>Bad Gateway</html>", content_type="text/html", perform=True)
    portal.inject("batch", lost, when=deleting)
    result = await call(connect, {"entityTypeId": 2, "ids": deals[:3], "dryRun": False}, confirm="none")
    assert result.structured_content is not None
    assert (result.structured_content["status"], result.structured_content["deleted"]) == ("deleted", 3)
    for entry in result.structured_content["results"]:
        assert "confirmed by absence" in entry["note"]
    assert [entry["event"] for entry in read_journal(journal_path)] == ["intent"] * 3 + ["deleted"] * 3


class Person:
    def __init__(self, action: str) -> None:
        self.action = action
        self.questions: list[str] = []

    async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.questions.append(getattr(params, "message", ""))
        content = {"delete": True} if self.action == "accept" else None
        return ElicitResult(action=self.action, content=content)  # type: ignore[arg-type]


@pytest.mark.parametrize("era", ["legacy", "default"])
async def test_one_question_names_the_count_the_type_and_every_title_of_a_small_set(
    connect: Connect, portal: Portal, deals: list[int], journal_path: Path, era: str
) -> None:
    person = Person("accept")
    latest = max(portal.items[2][item_id]["updatedTime"] for item_id in deals[:5])
    options = {"elicitation_callback": person} | ({"mode": "legacy"} if era == "legacy" else {})
    result = await call(connect, {"entityTypeId": 2, "ids": deals[:5], "dryRun": False}, confirm="auto", client=options)
    assert result.structured_content is not None
    assert (result.structured_content["status"], result.structured_content["deleted"]) == ("deleted", 5)
    assert set(person.questions) == {
        "Delete 5 deals from sandbox.bitrix24.test? They go to the CRM recycle bin if the portal keeps one; they can "
        f"be restored there, not through this server. Latest change among them: {latest}. "
        "Items: #5000 «Test deal 0», #5001 «Test deal 1», "
        "#5002 «Test deal 2», #5003 «Test deal 3», #5004 «Test deal 4»."
    }
    assert {entry["confirmation"] for entry in read_journal(journal_path)} == {"elicitation"}


@pytest.mark.parametrize(
    ("missing", "said"),
    [
        ([999_001], "(1 of the requested ids does not exist or cannot be read and is not included.)"),
        ([999_001, 999_002], "(2 of the requested ids do not exist or cannot be read and are not included.)"),
    ],
)
async def test_the_question_counts_the_requested_ids_it_leaves_out(
    connect: Connect, deals: list[int], missing: list[int], said: str
) -> None:
    person = Person("decline")
    arguments = {"entityTypeId": 2, "ids": [*deals[:2], *missing], "dryRun": False}
    await call(connect, arguments, confirm="auto", client={"elicitation_callback": person})
    assert len(person.questions) == 1 and said in person.questions[0]


async def test_a_declined_batch_deletes_nothing_and_is_journaled(
    connect: Connect, portal: Portal, deals: list[int], journal_path: Path
) -> None:
    result = await call(
        connect,
        {"entityTypeId": 2, "ids": deals[:3], "dryRun": False},
        confirm="auto",
        client={"elicitation_callback": Person("decline")},
    )
    assert result.structured_content is not None and result.structured_content["status"] == "cancelled"
    assert portal.calls_to("crm.item.delete") == []
    assert [entry["event"] for entry in read_journal(journal_path)] == ["cancelled"] * 3


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"entityTypeId": 2, "ids": []}, "ids"),
        ({"entityTypeId": 2, "ids": list(range(1, 502))}, "ids"),
        ({"entityTypeId": 2, "ids": [1, 2, 1]}, "repeated: 1"),
        ({"entityTypeId": 2, "ids": [1, "2"]}, "ids"),
        ({"entityTypeId": 2, "ids": [1, 2.0]}, "ids"),
        ({"entityTypeId": 2, "ids": [0]}, "ids"),
        ({"entityTypeId": 2, "ids": 5}, "ids"),
        ({"entityTypeId": "2", "ids": [1]}, "entityTypeId"),
        ({"entityTypeId": 2, "ids": [1], "dryRun": "false"}, "dryRun"),
        ({"entityTypeId": 2, "ids": [1], "halt": 1}, "halt"),
    ],
)
async def test_bad_input_is_refused_before_the_portal(
    connect: Connect, portal: Portal, arguments: dict[str, Any], named: str
) -> None:
    result = await call(connect, arguments, confirm="none")
    assert result.is_error is True
    assert named in result.content[0].text  # type: ignore[union-attr]
    assert portal.calls == []


async def test_a_set_changed_while_the_person_was_asked_is_not_deleted(
    connect: Connect, portal: Portal, deals: list[int]
) -> None:
    class Meanwhile(Person):
        async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
            portal.touch(2, FIRST + 1, stageId="WON")
            return await super().__call__(context, params)

    result = await call(
        connect,
        {"entityTypeId": 2, "ids": deals[:3], "dryRun": False},
        confirm="auto",
        client={"elicitation_callback": Meanwhile("accept"), "mode": "legacy"},
    )
    assert result.structured_content is not None and result.structured_content["error"] == "ITEM_CHANGED"
    assert portal.calls_to("crm.item.delete") == []


async def test_ids_sent_as_a_json_string_are_refused(connect: Connect, portal: Portal) -> None:
    result = await call(connect, {"entityTypeId": 2, "ids": "[42,43]", "dryRun": False}, confirm="none")
    assert result.structured_content is not None
    assert (result.structured_content["error"], result.is_error) == ("INVALID_ARGUMENTS", True)
    assert "ids" in result.structured_content["error_description"]
    assert portal.calls == [] and 42 in portal.items[2]


async def test_a_large_set_is_described_by_stage_and_a_sample_the_server_chooses(
    connect: Connect, portal: Portal
) -> None:
    # Three throw-away deals first in the caller's order, then nine real ones: the question must not let the
    # caller's order decide what the person sees.
    for offset in range(3):
        portal.add_item(
            2,
            {
                "id": 5000 + offset,
                "title": f"Test deal {offset}",
                "stageId": "NEW",
                "updatedTime": "2026-01-01T00:00:00+03:00",
            },
        )
    for offset in range(9):
        portal.add_item(
            2,
            {
                "id": 6000 + offset,
                "title": f"Real deal {offset}",
                "stageId": "WON",
                "opportunity": 1000.0 * (offset + 1),
                "currencyId": "USD",
                "updatedTime": f"2026-02-0{offset + 1}T00:00:00+03:00",
            },
        )
    person = Person("decline")
    ids = [5000, 5001, 5002, *range(6000, 6009)]
    await call(
        connect,
        {"entityTypeId": 2, "ids": ids, "dryRun": False},
        confirm="auto",
        client={"elicitation_callback": person},
    )
    (question,) = set(person.questions)
    assert question.startswith(
        "Delete 12 deals from sandbox.bitrix24.test? They go to the CRM recycle bin if the portal keeps one; they can "
        "be restored there, not through this server. Latest change among them: 2026-02-09T00:00:00+03:00. "
        "By stage: WON 9, NEW 3. "
    )
    assert "Most recently changed: #6008 «Real deal 8», #6007 «Real deal 7», #6006 «Real deal 6»." in question
    assert "Largest amounts: #6008 «Real deal 8» (9000 USD), #6007 «Real deal 7» (8000 USD)," in question
    assert "Test deal" not in question


async def test_the_batch_question_asks_about_all_the_items(connect: Connect, portal: Portal, deals: list[int]) -> None:
    schemas: list[dict[str, Any]] = []

    async def person(context: Any, params: ElicitRequestParams) -> ElicitResult:
        schemas.append(getattr(params, "requested_schema", {}))
        return ElicitResult(action="decline")

    await call(
        connect,
        {"entityTypeId": 2, "ids": deals[:2], "dryRun": False},
        confirm="auto",
        client={"elicitation_callback": person},
    )
    assert schemas[0]["properties"]["delete"]["description"] == "Tick to delete all these items."


async def test_on_a_full_disk_only_items_whose_intent_is_on_disk_are_sent(
    connect: Connect, portal: Portal, deals: list[int], journal_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    writes: list[int] = []

    def disk_fills_up(fd: int, data: Any) -> int:
        writes.append(len(data))
        if len(writes) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        lines = bytes(data).split(b"\n")
        room = sum(len(line) + 1 for line in lines[:5]) + len(lines[5]) // 2  # five whole lines and half a sixth
        return real_write(fd, bytes(data[:room]))

    monkeypatch.setattr("b24_mcp.journal.file.os.write", disk_fills_up)
    result = await call(connect, {"entityTypeId": 2, "ids": deals[:50], "dryRun": False}, confirm="none")
    assert result.structured_content is not None
    data = result.structured_content
    assert (data["status"], data["deleted"], data["failed"], data["remaining"]) == ("partial", 5, 0, 45)
    assert {entry["error"] for entry in data["results"] if entry["status"] == "error"} == {"JOURNAL_UNWRITABLE"}
    assert sorted(int(call.params["id"]) for call in portal.calls_to("crm.item.delete")) == deals[:5]
    assert [entry["event"] for entry in read_journal(journal_path)] == ["intent"] * 5
    assert journal_path.read_bytes().endswith(b"\n")
