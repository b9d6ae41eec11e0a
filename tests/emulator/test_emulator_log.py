"""The request log (log.py): what is recorded, and how much of it is kept."""

from __future__ import annotations

import threading

import httpx2
import pytest

from b24_mcp.sandbox.emulator import Call, Fault, Portal
from b24_mcp.sandbox.seed import (
    seeded_portal,
)
from emulator.emulator_helpers import READONLY_HOOK, call, make_client

pytestmark = pytest.mark.anyio


# ---------------------------------------------------------------------- request log


async def test_log_records_failed_auth_without_user(client: httpx2.AsyncClient, portal: Portal) -> None:
    await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42}, hook="/rest/1/wrong/")
    assert portal.calls == [
        Call(
            method="crm.item.delete",
            params={"entityTypeId": 2, "id": 42},
            user_id=None,
            status=403,
            error="INVALID_CREDENTIALS",
        )
    ]


async def test_log_records_successes_and_errors_with_user(client: httpx2.AsyncClient, portal: Portal) -> None:
    await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42}, hook=READONLY_HOOK)
    await call(client, "crm.item.delete", {"entityTypeId": 2, "id": 42})
    await call(client, "crm.item.get", {"entityTypeId": 2, "id": 40})
    deletes = portal.calls_to("crm.item.delete")
    assert [(c.user_id, c.status, c.error) for c in deletes] == [(7, 400, "ACCESS_DENIED"), (1, 200, None)]
    assert len(portal.calls) == 3


async def test_log_records_fault_status(client: httpx2.AsyncClient, portal: Portal) -> None:
    portal.inject("crm.item.get", Fault(status=502, body=b"bad gateway", content_type="text/plain"))
    await call(client, "crm.item.get", {"entityTypeId": 2, "id": 42})
    assert (portal.calls[-1].status, portal.calls[-1].error) == (502, None)


# ---------------------------------------------------------------------- a bounded log


def record(portal: Portal, count: int, method: str = "scope") -> None:
    for number in range(count):
        portal.log(method, {"n": number}, 1, 200, None)


def numbers(calls: list[Call]) -> list[int]:
    return [call.params["n"] for call in calls]


def test_log_keeps_the_last_ten_thousand_calls_by_default() -> None:
    portal = Portal()
    record(portal, 10_500)
    assert (len(portal.calls), portal.calls.limit) == (10_000, 10_000)
    assert (portal.calls[0].params, portal.calls[-1].params) == ({"n": 500}, {"n": 10_499})


async def test_log_limit_bounds_what_a_served_portal_keeps() -> None:
    portal = seeded_portal(rate_limit=None, log_limit=3)
    async with make_client(portal) as client:
        for item_id in (40, 41, 42, 43, 44):
            await call(client, "crm.item.get", {"entityTypeId": 2, "id": item_id})
    assert [c.params["id"] for c in portal.calls] == [42, 43, 44]


def test_log_counts_every_call_it_ever_recorded() -> None:
    portal = Portal(log_limit=3)
    record(portal, 5)
    assert portal.calls.recorded == 5


def test_calls_to_reads_the_kept_calls_of_one_method() -> None:
    portal = Portal(log_limit=4)
    record(portal, 3, "crm.item.get")
    record(portal, 2, "crm.item.delete")
    assert numbers(portal.calls_to("CRM.ITEM.GET")) == [1, 2]


def test_since_gives_the_calls_after_a_mark_even_once_older_ones_are_gone() -> None:
    portal = Portal(log_limit=5)
    record(portal, 4)
    mark = portal.calls.recorded
    record(portal, 3)
    assert numbers(portal.calls.since(mark)) == [0, 1, 2]


def test_log_limit_none_keeps_every_call() -> None:
    portal = Portal(log_limit=None)
    record(portal, 12_000)
    assert len(portal.calls) == 12_000


def test_log_limit_must_keep_at_least_one_call() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Portal(log_limit=0)


def test_log_reads_like_a_list() -> None:
    portal = Portal()
    record(portal, 3)
    assert portal.calls[1:] == [Call("scope", {"n": 1}, 1, 200, None), Call("scope", {"n": 2}, 1, 200, None)]
    portal.calls.clear()
    assert portal.calls == []


def test_log_can_be_read_while_another_thread_appends() -> None:
    portal = Portal(log_limit=1_000)
    stop = threading.Event()

    def append() -> None:
        while not stop.is_set():
            record(portal, 100)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        for _ in range(300):
            list(portal.calls)
            portal.calls_to("scope")
            portal.calls.since(portal.calls.recorded - 10)
    finally:
        stop.set()
        writer.join()
