"""Whole items with many user fields: reading a set for its journal snapshot stays under the answer cap by asking
for fewer pages a request, and gives up only when a single page is over it.

The emulator serves over real HTTPS; the cap is made small so that a few hundred kilobytes stand for the many
megabytes 2,500 whole items with hundreds of user fields come to on a real portal.
"""

from __future__ import annotations

import pytest

from b24_mcp.bulk.selection import ItemLister
from b24_mcp.errors import AnswerTooLarge
from b24_mcp.portal.auth import WebhookAuth
from b24_mcp.portal.client import PortalClient
from b24_mcp.sandbox.emulator import Portal
from b24_mcp.settings import parse_webhook_url
from helpers import TLSFiles

pytestmark = pytest.mark.anyio

WIDE = 1200  # a smart process whose items carry a long user field
NOTES = "x" * 2000  # about 2.5 KB an item in all: a page of 50 is about 125 KB


@pytest.fixture
def wide_items(portal: Portal) -> list[int]:
    """120 items: three pages, about 375 KB together."""
    portal.add_type(WIDE, "Wide items")
    ids = [portal.add_item(WIDE, {"title": f"Wide {n}", "ufCrm9Notes": NOTES})["id"] for n in range(120)]
    portal.calls.clear()
    return ids


def lister(webhook_url: str, tls: TLSFiles, cap_kib: int) -> ItemLister:
    auth = WebhookAuth(parse_webhook_url(webhook_url, allow_http=False))
    client = PortalClient(auth, ca_bundle=str(tls.ca_bundle), max_retries=0, max_answer_bytes=cap_kib * 1024)
    return ItemLister(client)


async def test_pages_that_outgrow_the_cap_together_are_read_again_in_smaller_requests(
    portal: Portal, webhook_url: str, tls: TLSFiles, wide_items: list[int]
) -> None:
    reader = lister(webhook_url, tls, cap_kib=200)
    items = await reader.read(WIDE, wide_items)
    await reader.portal.aclose()
    assert list(items) == wide_items
    assert {item["ufCrm9Notes"] for item in items.values()} == {NOTES}
    assert len(portal.calls_to("batch")) == 1 + 3  # the three pages at once, then one page a request


async def test_a_single_page_over_the_cap_is_a_bad_portal_response(
    webhook_url: str, tls: TLSFiles, wide_items: list[int]
) -> None:
    reader = lister(webhook_url, tls, cap_kib=64)
    with pytest.raises(AnswerTooLarge) as caught:
        await reader.read(WIDE, wide_items)
    await reader.portal.aclose()
    assert caught.value.code == "BAD_PORTAL_RESPONSE"


async def test_items_that_fit_are_read_in_one_request(
    portal: Portal, webhook_url: str, tls: TLSFiles, wide_items: list[int]
) -> None:
    reader = lister(webhook_url, tls, cap_kib=1024)
    assert list(await reader.read(WIDE, wide_items)) == wide_items
    await reader.portal.aclose()
    assert len(portal.calls_to("batch")) == 1
