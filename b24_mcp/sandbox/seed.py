"""Seeded demo data for the sandbox portal: named users with different rights and their webhooks, an OAuth app
(its person signed in as the administrator), two smart processes, stable items."""

from __future__ import annotations

from typing import Any

from b24_mcp.sandbox.emulator import Portal, User, Webhook

__all__ = [
    "CONTRACTS_TYPE_ID",
    "EXTRANET_USER_ID",
    "EXTRANET_WEBHOOK_CODE",
    "NOSCOPE_USER_ID",
    "NOSCOPE_WEBHOOK_CODE",
    "PROJECTS_TYPE_ID",
    "READONLY_USER_ID",
    "READONLY_WEBHOOK_CODE",
    "SALES_USER_ID",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "SANDBOX_HOST",
    "SANDBOX_USER_ID",
    "SANDBOX_WEBHOOK_CODE",
    "seeded_portal",
]

from b24_mcp.sandbox.accounts import (
    CONTRACTS_TYPE_ID,
    EXTRANET_USER_ID,
    EXTRANET_WEBHOOK_CODE,
    NOSCOPE_USER_ID,
    NOSCOPE_WEBHOOK_CODE,
    PROJECTS_TYPE_ID,
    READONLY_USER_ID,
    READONLY_WEBHOOK_CODE,
    SALES_USER_ID,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_HOST,
    SANDBOX_USER_ID,
    SANDBOX_WEBHOOK_CODE,
)


def _ts(day: int, hour: int, minute: int = 0) -> str:
    return f"2026-03-{day:02d}T{hour:02d}:{minute:02d}:00+03:00"


def _fm(item_id: int, phone: str | None, email: str | None) -> list[dict[str, Any]]:
    values: list[dict[str, Any]] = []
    if phone:
        values.append({"id": item_id * 10 + 1, "typeId": "PHONE", "valueType": "WORK", "value": phone})
    if email:
        values.append({"id": item_id * 10 + 2, "typeId": "EMAIL", "valueType": "WORK", "value": email})
    return values


def _common(day: int, assigned: int, created_by: int = 1) -> dict[str, Any]:
    return {
        "createdTime": _ts(day, 9, 30),
        "updatedTime": _ts(day + 1, 14, 5),
        "createdBy": created_by,
        "updatedBy": created_by,
        "assignedById": assigned,
        "opened": "Y",
    }


_LEADS = [
    (11, "Website enquiry: Northwind", "NEW", 1200.0, "Anna", "Petrova", "+1 555 0111", "anna@northwind.test"),
    (12, "Trade show contact: Globex", "IN_PROCESS", 5400.0, "Hank", "Scorpio", "+1 555 0112", None),
    (13, "Cold call: Initech", "PROCESSED", 0.0, "Bill", "Lumbergh", None, "bill@initech.test"),
    (14, "Referral: Umbrella", "JUNK", 800.0, "Alice", "Abernathy", "+1 555 0114", "alice@umbrella.test"),
]

_DEALS = [
    (40, "Northwind pilot", "NEW", 3000.0, 1, 21, 31),
    (41, "Globex licences", "PREPARATION", 12500.0, 7, 22, 32),
    (42, "Acme renewal", "EXECUTING", 18900.5, 1, 23, 33),
    (43, "Initech support plan", "FINAL_INVOICE", 4200.0, 7, 24, 31),
    (44, "Umbrella expansion", "WON", 27000.0, 1, 21, 32),
    (45, "Stark audit", "LOSE", 990.0, 1, 22, 33),
]

_CONTACTS = [
    (21, "Anna", "Petrova", "+1 555 0121", "anna.petrova@northwind.test", 31),
    (22, "Hank", "Scorpio", "+1 555 0122", "hank@globex.test", 32),
    (23, "Wile", "Coyote", None, "wile@acme.test", 33),
    (24, "Peter", "Gibbons", "+1 555 0124", None, 31),
]

_COMPANIES = [
    (31, "Northwind Traders", "CUSTOMER", "+1 555 0131", "info@northwind.test"),
    (32, "Globex Corporation", "PARTNER", "+1 555 0132", None),
    (33, "Acme Corporation", "CUSTOMER", None, "sales@acme.test"),
]


def seeded_portal(**portal_kwargs: Any) -> Portal:
    """A portal with the sandbox webhooks and OAuth app (no tokens issued), the Contracts/Projects smart processes
    and stable demo items."""
    portal_kwargs.setdefault("host", SANDBOX_HOST)
    portal = Portal(**portal_kwargs)
    portal.add_user(User(SANDBOX_USER_ID, "Sandbox", "Administrator", "admin@sandbox.test", admin=True))
    portal.add_user(User(READONLY_USER_ID, "Rita", "Reader", "rita@sandbox.test", can_delete=False))
    portal.add_user(User(EXTRANET_USER_ID, "Eve", "Guest", "eve@partner.test", intranet=False))
    portal.add_user(User(NOSCOPE_USER_ID, "Ned", "Noscope", "ned@sandbox.test"))
    sales = portal.add_user(User(SALES_USER_ID, "Sam", "Sales", "sam@sandbox.test"))
    sales.deny("read", PROJECTS_TYPE_ID)
    sales.deny("delete", 4)
    portal.add_webhook(
        Webhook(SANDBOX_USER_ID, SANDBOX_WEBHOOK_CODE, admin=True, name="Sandbox", last_name="Administrator")
    )
    portal.add_webhook(
        Webhook(READONLY_USER_ID, READONLY_WEBHOOK_CODE, can_delete=False, name="Rita", last_name="Reader")
    )
    portal.add_webhook(Webhook(EXTRANET_USER_ID, EXTRANET_WEBHOOK_CODE, intranet=False, name="Eve", last_name="Guest"))
    portal.add_webhook(
        Webhook(NOSCOPE_USER_ID, NOSCOPE_WEBHOOK_CODE, scopes=frozenset({"user"}), name="Ned", last_name="Noscope")
    )
    portal.add_app(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, scopes=frozenset({"crm", "user_brief"}))
    portal.sign_in_as(SANDBOX_USER_ID)

    contracts = portal.add_type(CONTRACTS_TYPE_ID, "Contracts", recycle_bin=False)
    contracts.code = "contracts"
    projects = portal.add_type(PROJECTS_TYPE_ID, "Projects", recycle_bin=True)
    projects.code = "projects"
    projects.created_time = projects.updated_time = "2026-02-03T11:20:00+03:00"

    for day, (item_id, title, stage, amount, name, last, phone, email) in enumerate(_LEADS, start=2):
        portal.add_item(
            1,
            {
                "id": item_id,
                "title": title,
                **_common(day, assigned=1),
                "stageId": stage,
                "opportunity": amount,
                "currencyId": "USD",
                "name": name,
                "lastName": last,
                "sourceId": "WEB",
                "observers": [],
                "contactIds": [],
                "fm": _fm(item_id, phone, email),
            },
        )

    for day, (item_id, title, stage, amount, assigned, contact, company) in enumerate(_DEALS, start=5):
        portal.add_item(
            2,
            {
                "id": item_id,
                "title": title,
                **_common(day, assigned=assigned),
                "categoryId": 0,
                "stageId": stage,
                "opportunity": amount,
                "currencyId": "USD",
                "companyId": company,
                "contactId": contact,
                "closedate": _ts(28, 0),
                "observers": [7] if assigned == 1 else [],
                "contactIds": [contact],
            },
        )

    for day, (item_id, name, last, phone, email, company) in enumerate(_CONTACTS, start=2):
        portal.add_item(
            3,
            {
                "id": item_id,
                **_common(day, assigned=1),
                "name": name,
                "secondName": None,
                "lastName": last,
                "typeId": "CLIENT",
                "sourceId": "CALL",
                "companyId": company,
                "companyIds": [company],
                "observers": [],
                "fm": _fm(item_id, phone, email),
            },
        )

    for day, (item_id, title, company_type, phone, email) in enumerate(_COMPANIES, start=2):
        portal.add_item(
            4,
            {
                "id": item_id,
                "title": title,
                **_common(day, assigned=1),
                "typeId": company_type,
                "industry": "IT",
                "revenue": 0,
                "currencyId": "USD",
                "observers": [],
                "contactIds": [c[0] for c in _CONTACTS if c[5] == item_id],
                "fm": _fm(item_id, phone, email),
            },
        )

    portal.add_item(
        7,
        {
            "id": 51,
            "title": "Quote for Acme renewal",
            **_common(12, assigned=1),
            "stageId": "DRAFT",
            "opportunity": 18900.5,
            "currencyId": "USD",
            "dealId": 42,
            "companyId": 33,
            "contactIds": [23],
        },
    )
    portal.add_item(
        31,
        {
            "id": 61,
            "title": "Invoice #61",
            **_common(13, assigned=1),
            "categoryId": 0,
            "stageId": "DT31_1:N",
            "opportunity": 4200.0,
            "currencyId": "USD",
            "accountNumber": "INV-2026-061",
            "companyId": 31,
            "observers": [],
            "contactIds": [24],
        },
    )

    for day, (item_id, title, stage) in enumerate(
        [(1, "Master services agreement: Acme", "NEW"), (2, "NDA: Globex", "SUCCESS"), (3, "DPA: Northwind", "FAIL")],
        start=14,
    ):
        portal.add_item(
            CONTRACTS_TYPE_ID,
            {
                "id": item_id,
                "title": title,
                **_common(day, assigned=1),
                "categoryId": 7,
                "stageId": f"DT{CONTRACTS_TYPE_ID}_7:{stage}",
                "opportunity": 0,
                "currencyId": "USD",
                "companyId": 33 - item_id + 1,
                "observers": [],
                "contactIds": [],
            },
        )

    for day, (item_id, title) in enumerate([(1, "CRM migration"), (2, "Website relaunch")], start=18):
        portal.add_item(
            PROJECTS_TYPE_ID,
            {
                "id": item_id,
                "title": title,
                **_common(day, assigned=7 if item_id == 2 else 1),
                "categoryId": 9,
                "stageId": f"DT{PROJECTS_TYPE_ID}_9:PREPARATION",
                "opportunity": 15000.0 * item_id,
                "currencyId": "USD",
                "observers": [],
                "contactIds": [21],
            },
        )
    return portal
