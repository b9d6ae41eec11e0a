"""The deletion service without MCP: preview, the gate in every route, guardrails, and the journal."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from b24_mcp.deleting.gate import Answer, Consent, Route
from b24_mcp.deleting.item import ItemDeletion
from b24_mcp.portal.items import version_of
from b24_mcp.sandbox.emulator import Fault, Portal
from b24_mcp.sandbox.link import sandbox_webhook
from b24_mcp.sandbox.seed import READONLY_USER_ID, READONLY_WEBHOOK_CODE, SANDBOX_HOST, SANDBOX_WEBHOOK_CODE
from b24_mcp.sandbox.serve import sandbox_transport
from b24_mcp.settings import Settings, parse_webhook_url
from helpers import item_deletion, read_journal

pytestmark = pytest.mark.anyio

HTML_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def deletes(portal: Portal) -> int:
    return len(portal.calls_to("crm.item.delete"))


async def token_for(service: ItemDeletion, entity_type_id: int = 2, item_id: int = 42) -> str:
    preview = await service.preview(entity_type_id, item_id)
    assert preview.confirmationToken is not None
    return preview.confirmationToken


def with_token(token: str | None) -> Consent:
    return Consent(route=Route.TOKEN, token=token)


# Preview


async def test_preview_summarizes_the_item_and_deletes_nothing(service: ItemDeletion, portal: Portal) -> None:
    result = await service.preview(2, 42)
    assert result.status == "preview"
    assert result.item is not None
    assert (result.item.title, result.item.stageId, result.item.opportunity) == ("Acme renewal", "EXECUTING", 18900.5)
    assert result.confirmationToken and result.confirmationExpiresAt
    assert "nothing was deleted" in result.message
    assert deletes(portal) == 0 and 42 in portal.items[2]


async def test_preview_names_a_contact_by_its_name(service: ItemDeletion, portal: Portal) -> None:
    contact = portal.items[3][21]
    result = await service.preview(3, 21)
    assert result.item is not None and result.item.title is not None
    assert contact["name"] in result.item.title and contact["lastName"] in result.item.title


async def test_preview_of_a_missing_item_is_the_portals_not_found(service: ItemDeletion) -> None:
    result = await service.preview(2, 999)
    assert (result.status, result.error, result.error_description, result.httpStatus, result.retryable) == (
        "error",
        "NOT_FOUND",
        "Item was not found.",
        400,
        False,
    )


async def test_preview_of_an_unknown_type_is_not_found_for_the_type(service: ItemDeletion) -> None:
    result = await service.preview(999_999, 1)
    assert (result.error, result.error_description) == ("NOT_FOUND", "Smart Process Automation was not found")


async def test_a_portal_description_without_a_full_stop_still_reads_as_a_sentence(service: ItemDeletion) -> None:
    result = await service.preview(999_999, 1)
    assert "Smart Process Automation was not found. Check the entityTypeId" in result.message


# The token route


async def test_delete_without_a_token_is_refused_before_the_portal(service: ItemDeletion, portal: Portal) -> None:
    result = await service.delete(2, 42, with_token(None))
    assert (result.status, result.error, result.retryable) == ("error", "CONFIRMATION_REQUIRED", False)
    assert portal.calls == []


async def test_delete_with_the_previews_token_deletes(
    service: ItemDeletion, portal: Portal, journal_path: Path
) -> None:
    result = await service.delete(2, 42, with_token(await token_for(service)))
    assert (result.status, result.confirmation) == ("deleted", "token")
    assert result.item is not None and result.item.title == "Acme renewal"
    assert 42 not in portal.items[2]
    assert [entry["event"] for entry in read_journal(journal_path)] == ["intent", "deleted"]


async def test_a_token_for_another_item_is_refused_before_the_portal(service: ItemDeletion, portal: Portal) -> None:
    token = await token_for(service, 2, 42)
    portal.calls.clear()
    result = await service.delete(2, 43, with_token(token))
    assert result.error == "INVALID_CONFIRMATION_TOKEN"
    assert portal.calls == []


async def test_a_forged_token_never_reaches_the_portal(service: ItemDeletion, portal: Portal) -> None:
    result = await service.delete(2, 42, with_token("b24c1.eyJ0IjoyfQ.AAAA"))
    assert result.error == "INVALID_CONFIRMATION_TOKEN"
    assert portal.calls == []


async def test_an_item_changed_since_the_preview_is_not_deleted(service: ItemDeletion, portal: Portal) -> None:
    token = await token_for(service)
    portal.touch(2, 42, title="Acme renewal (renegotiated)")
    result = await service.delete(2, 42, with_token(token))
    assert (result.error, result.retryable) == ("ITEM_CHANGED", False)
    assert 42 in portal.items[2] and deletes(portal) == 0


# updatedTime has whole seconds: a change in the second of the preview keeps it, the shown fields do not.
SAME_SECOND_CHANGES = [
    {"title": "Acme renewal (renegotiated)"},
    {"stageId": "WON"},
    {"assignedById": 3},
    {"opportunity": 999_999.0},
    {"currencyId": "EUR"},
]


@pytest.mark.parametrize("change", SAME_SECOND_CHANGES, ids=lambda change: next(iter(change)))
async def test_a_shown_field_changed_within_the_second_of_the_preview_is_item_changed(
    service: ItemDeletion, portal: Portal, change: dict[str, object]
) -> None:
    token = await token_for(service)
    updated = portal.items[2][42]["updatedTime"]
    portal.touch(2, 42, same_second=True, **change)
    result = await service.delete(2, 42, with_token(token))
    assert (result.error, result.retryable) == ("ITEM_CHANGED", False)
    assert f"within the same second, updatedTime {updated}" in result.message
    assert 42 in portal.items[2] and deletes(portal) == 0


@pytest.mark.parametrize("change", SAME_SECOND_CHANGES, ids=lambda change: next(iter(change)))
async def test_a_yes_to_an_item_changed_within_the_same_second_deletes_nothing(
    service: ItemDeletion, portal: Portal, change: dict[str, object]
) -> None:
    question = await service.question(2, 42)
    assert question is not None
    consent = Consent(route=Route.ASK, answer=Answer.ACCEPTED, shown=question.version)
    portal.touch(2, 42, same_second=True, **change)
    result = await service.delete(2, 42, consent)
    assert (result.status, result.error) == ("error", "ITEM_CHANGED")
    assert deletes(portal) == 0


async def test_a_field_the_person_was_not_shown_does_not_void_the_confirmation(
    service: ItemDeletion, portal: Portal
) -> None:
    token = await token_for(service)
    portal.touch(2, 42, same_second=True, comments="a note added meanwhile")
    result = await service.delete(2, 42, with_token(token))
    assert result.status == "deleted"


async def test_the_same_delete_again_reports_the_portals_not_found(service: ItemDeletion, portal: Portal) -> None:
    token = await token_for(service)
    await service.delete(2, 42, with_token(token))
    again = await service.delete(2, 42, with_token(token))
    assert (again.error, again.httpStatus) == ("NOT_FOUND", 400)
    assert deletes(portal) == 1


async def test_a_used_token_is_refused_for_an_item_still_there(service: ItemDeletion, portal: Portal) -> None:
    token = await token_for(service)
    portal.inject(
        "crm.item.delete", Fault(status=400, json={"error": "ACCESS_DENIED", "error_description": "Access denied"})
    )
    first = await service.delete(2, 42, with_token(token))
    second = await service.delete(2, 42, with_token(token))
    assert (first.error, second.error) == ("ACCESS_DENIED", "INVALID_CONFIRMATION_TOKEN")
    assert deletes(portal) == 1


async def test_a_portal_refusal_passes_through_and_nothing_is_deleted(
    make_settings: Callable[..., Settings], portal: Portal, journal_path: Path
) -> None:
    hook = parse_webhook_url(
        f"https://{SANDBOX_HOST}/rest/{READONLY_USER_ID}/{READONLY_WEBHOOK_CODE}/", allow_http=False
    )
    service = item_deletion(make_settings(), hook, sandbox_transport(portal), retry_base=0.01)
    result = await service.delete(2, 42, with_token(await token_for(service)))
    assert (result.status, result.error, result.error_description, result.httpStatus) == (
        "error",
        "ACCESS_DENIED",
        "Access denied",
        400,
    )
    assert "Nothing was deleted" in result.message
    assert 42 in portal.items[2]
    assert [entry["event"] for entry in read_journal(journal_path)] == ["intent", "error"]
    assert read_journal(journal_path)[1]["error"] == "ACCESS_DENIED"


# The other routes


async def test_no_gate_deletes_without_a_token(service: ItemDeletion, portal: Portal, journal_path: Path) -> None:
    result = await service.delete(2, 42, Consent(route=Route.NONE))
    assert (result.status, result.confirmation) == ("deleted", "none")
    assert read_journal(journal_path)[0]["confirmation"] == "none"


async def test_a_client_that_cannot_be_asked_is_refused_when_asking_is_required(
    service: ItemDeletion, portal: Portal
) -> None:
    result = await service.delete(2, 42, Consent(route=Route.UNSUPPORTED))
    assert result.error == "ELICITATION_UNSUPPORTED"
    assert portal.calls == []


def accepted(portal: Portal, entity_type_id: int = 2, item_id: int = 42) -> Consent:
    """The person's yes to a question that showed the item as it is now."""
    shown = version_of(portal.items[entity_type_id][item_id])
    return Consent(route=Route.ASK, answer=Answer.ACCEPTED, shown=shown)


async def test_the_persons_yes_deletes(service: ItemDeletion, portal: Portal, journal_path: Path) -> None:
    result = await service.delete(2, 42, accepted(portal))
    assert (result.status, result.confirmation) == ("deleted", "elicitation")
    assert read_journal(journal_path)[-1]["confirmation"] == "elicitation"


@pytest.mark.parametrize("answer", [Answer.DECLINED, Answer.CANCELLED])
async def test_the_persons_no_cancels_and_is_journaled(
    service: ItemDeletion, portal: Portal, journal_path: Path, answer: Answer
) -> None:
    result = await service.delete(2, 42, Consent(route=Route.ASK, answer=answer))
    assert (result.status, result.error) == ("cancelled", None)
    assert deletes(portal) == 0
    (entry,) = read_journal(journal_path)
    assert (entry["event"], entry["item"]["title"]) == ("cancelled", "Acme renewal")


async def test_a_yes_to_an_older_version_deletes_nothing(service: ItemDeletion, portal: Portal) -> None:
    consent = accepted(portal)
    portal.touch(2, 42, opportunity=1.0)
    result = await service.delete(2, 42, consent)
    assert (result.status, result.error) == ("error", "ITEM_CHANGED")
    assert deletes(portal) == 0


async def test_a_yes_without_the_version_shown_deletes_nothing(service: ItemDeletion, portal: Portal) -> None:
    result = await service.delete(2, 42, Consent(route=Route.ASK, answer=Answer.ACCEPTED))
    assert result.error == "CONFIRMATION_REQUIRED"
    assert deletes(portal) == 0


async def test_an_unasked_question_never_deletes(service: ItemDeletion, portal: Portal) -> None:
    result = await service.delete(2, 42, Consent(route=Route.ASK, answer=Answer.NOT_ASKED))
    assert result.error == "CONFIRMATION_REQUIRED"
    assert deletes(portal) == 0


async def test_an_unasked_question_for_a_missing_item_reports_not_found(service: ItemDeletion) -> None:
    result = await service.delete(2, 999, Consent(route=Route.ASK, answer=Answer.NOT_ASKED))
    assert result.error == "NOT_FOUND"


async def test_the_question_names_type_id_title_and_portal(service: ItemDeletion, portal: Portal) -> None:
    question = await service.question(2, 42)
    assert question is not None
    assert question.text == (
        f"Delete deal #42 from {SANDBOX_HOST} (last changed 2026-03-08T14:05:00+03:00)? "
        "It goes to the CRM recycle bin if the portal keeps one; it can be restored there, not through this server. "
        "Title: «Acme renewal»."
    )
    assert question.version == version_of(portal.items[2][42])
    assert question.version.startswith("2026-03-08T14:05:00+03:00~")  # updatedTime and the shown fields


@pytest.mark.parametrize(
    ("entity_type_id", "item_id", "recycle_bin", "words"),
    [
        (2, 42, True, "goes to the CRM recycle bin if the portal keeps one; it can be restored there, not through"),
        (3, 21, True, "goes to the CRM recycle bin if the portal keeps one; it can be restored there, not through"),
        (1038, 1, False, "deleted permanently"),
        (1046, 1, True, "goes to the CRM recycle bin if the portal keeps one; it can be restored there, not through"),
        (31, 61, None, "goes to the CRM recycle bin is not known; this server cannot restore it"),
    ],
)
async def test_the_preview_says_where_the_item_goes_and_never_promises_a_restore(
    service: ItemDeletion, entity_type_id: int, item_id: int, recycle_bin: bool | None, words: str
) -> None:
    result = await service.preview(entity_type_id, item_id)
    assert result.recycleBin is recycle_bin
    assert words in result.message
    question = await service.question(entity_type_id, item_id)
    assert question is not None and words in question.text


async def test_the_type_list_is_read_once_for_many_previews(service: ItemDeletion, portal: Portal) -> None:
    for item_id in (1, 2, 3):
        await service.preview(1038, item_id)
    assert len(portal.calls_to("crm.type.list")) == 1


async def test_a_deleted_deal_is_in_the_recycle_bin_only_if_the_portal_keeps_one(service: ItemDeletion) -> None:
    result = await service.delete(2, 42, Consent(route=Route.NONE))
    assert (result.status, result.recycleBin) == ("deleted", True)
    assert result.message.endswith(
        "It is in the CRM recycle bin if the portal keeps one (restore it there, not through this server)."
    )


async def test_a_deleted_smart_process_item_says_it_is_gone_for_good(service: ItemDeletion, portal: Portal) -> None:
    result = await service.delete(1038, 1, Consent(route=Route.NONE))
    assert (result.status, result.recycleBin) == ("deleted", False)
    assert "gone for good" in result.message


# Guardrails


async def test_read_only_previews_but_refuses_to_delete(make_settings: Callable[..., Settings], portal: Portal) -> None:
    service = item_deletion(
        make_settings(read_only=True, confirm="none"), sandbox_webhook(), sandbox_transport(portal), retry_base=0.01
    )
    assert (await service.preview(2, 42)).status == "preview"
    portal.calls.clear()
    result = await service.delete(2, 42, Consent(route=Route.NONE))
    assert (result.error, result.retryable) == ("READ_ONLY", False)
    assert portal.calls == []
    assert await service.question(2, 42) is None


async def test_a_type_outside_the_allowed_list_never_reaches_the_portal(
    make_settings: Callable[..., Settings], portal: Portal
) -> None:
    service = item_deletion(
        make_settings(allowed_entity_types="2,1038"), sandbox_webhook(), sandbox_transport(portal), retry_base=0.01
    )
    preview = await service.preview(3, 21)
    deletion = await service.delete(3, 21, Consent(route=Route.NONE))
    assert (preview.error, deletion.error) == ("ENTITY_TYPE_NOT_ALLOWED", "ENTITY_TYPE_NOT_ALLOWED")
    assert portal.calls == []
    assert (await service.preview(1038, 1)).status == "preview"


# The journal


async def test_the_journal_holds_the_full_snapshot_and_no_secret(
    service: ItemDeletion, portal: Portal, journal_path: Path
) -> None:
    snapshot = dict(portal.items[2][42])
    await service.delete(2, 42, with_token(await token_for(service)))
    entries = read_journal(journal_path)
    for entry in entries:
        assert (entry["portal"], entry["userId"], entry["entityTypeId"], entry["id"]) == (SANDBOX_HOST, 1, 2, 42)
        assert entry["item"] == snapshot
        assert entry["ts"].endswith("Z")
    assert SANDBOX_WEBHOOK_CODE not in journal_path.read_text()


async def test_the_journal_is_private_and_its_folder_is_created(service: ItemDeletion, journal_path: Path) -> None:
    await service.delete(2, 42, with_token(await token_for(service)))
    assert stat.S_IMODE(journal_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal_path.parent.stat().st_mode) == 0o700


async def test_the_intent_is_on_disk_before_the_delete_is_sent(
    service: ItemDeletion, portal: Portal, journal_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[list[str], int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        seen.append(([entry["event"] for entry in read_journal(journal_path)], deletes(portal)))

    monkeypatch.setattr(os, "fsync", fsync)
    await service.delete(2, 42, with_token(await token_for(service)))
    assert seen == [(["intent"], 0), (["intent", "deleted"], 1)]


async def test_an_unwritable_journal_blocks_the_deletion(
    make_settings: Callable[..., Settings], portal: Portal, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    service = item_deletion(
        make_settings(audit_log=blocker / "audit.jsonl"), sandbox_webhook(), sandbox_transport(portal)
    )
    result = await service.delete(2, 42, with_token(await token_for(service)))
    assert (result.status, result.error) == ("error", "JOURNAL_UNWRITABLE")
    assert "Nothing was deleted" in result.message
    assert deletes(portal) == 0 and 42 in portal.items[2]


# Lost answers: never misreport a deletion


async def test_a_lost_answer_after_the_delete_is_confirmed_by_absence(
    service: ItemDeletion, portal: Portal, journal_path: Path
) -> None:
    portal.inject("crm.item.delete", Fault(status=502, body=HTML_502, content_type="text/html", perform=True))
    result = await service.delete(2, 42, with_token(await token_for(service)))
    assert result.status == "deleted"
    assert "absence" in result.message
    assert read_journal(journal_path)[-1]["event"] == "deleted"
    assert "absence" in read_journal(journal_path)[-1]["note"]


async def test_a_lost_answer_without_a_delete_is_an_error_and_the_item_stays(
    service: ItemDeletion, portal: Portal
) -> None:
    for _ in range(4):  # the first attempt and its three retries
        portal.inject("crm.item.delete", Fault(status=502, body=HTML_502, content_type="text/html"))
    result = await service.delete(2, 42, with_token(await token_for(service)))
    assert (result.status, result.error, result.retryable, result.httpStatus) == (
        "error",
        "BAD_PORTAL_RESPONSE",
        True,
        502,
    )
    assert 42 in portal.items[2]


async def test_an_uncheckable_lost_answer_is_reported_as_unknown(service: ItemDeletion, portal: Portal) -> None:
    token = await token_for(service)
    portal.inject("crm.item.delete", Fault(status=502, body=HTML_502, content_type="text/html", perform=True))
    portal.inject("crm.item.get", Fault(status=200, json={"result": {"item": dict(portal.items[2][42])}}))
    for _ in range(4):
        portal.inject("crm.item.get", Fault(status=502, body=HTML_502, content_type="text/html"))
    result = await service.delete(2, 42, with_token(token))
    assert result.status == "error"
    assert "unknown whether it was deleted" in result.message
