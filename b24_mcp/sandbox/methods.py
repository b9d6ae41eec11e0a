"""The REST methods the portal answers, and how a method call runs (spec §1, §7).

Each handler takes the portal, the caller and the parameters and returns an ``Outcome`` or raises a
``RestError``. ``run`` adds what every call goes through: the lookup in the portal's method table (these plus
``batch``), the intranet prefilter of ``crm.*`` controllers, and the operating-time charge of a call that returns.
"""

from __future__ import annotations

import copy
from typing import Any

from b24_mcp.sandbox.envelope import Outcome, RestError, localized
from b24_mcp.sandbox.listing import Selection, bind_array, filter_rows, order_rows, paged
from b24_mcp.sandbox.php import bind_int
from b24_mcp.sandbox.state import Handler, PortalState
from b24_mcp.sandbox.users import Caller

__all__ = ["METHODS", "Handler", "required_scopes", "run"]


_USER_SCOPES = frozenset({"user", "user_basic", "user_brief"})


def required_scopes(method: str) -> frozenset[str]:
    """Scopes of which the credential needs one to call ``method`` (empty: any credential may)."""
    if method.startswith("crm."):
        return frozenset({"crm"})
    if method == "user.current":
        return _USER_SCOPES
    return frozenset()


def run(portal: PortalState, method: str, params: dict[str, Any], caller: Caller) -> Outcome:
    handler = portal.methods.get(method)
    if handler is None:
        raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    if method.startswith("crm.") and not caller.intranet:
        raise RestError(403, "allowed_only_intranet_user", "This action is available only to Intranet users")
    outcome = handler(portal, caller, params)
    # Like loadlimiter.php, only a call that returns is charged: a thrown error skips registerEnding.
    portal.operating.charge(caller.credential, method)
    return outcome


def crm_item_get(portal: PortalState, caller: Caller, params: dict[str, Any]) -> Outcome:
    entity_type_id = bind_int(params, "entityTypeId")
    item_id = bind_int(params, "id")
    portal.crm.factory(entity_type_id, portal.language)
    item = portal.crm.item(entity_type_id, item_id, portal.language)
    if not caller.may("read", entity_type_id, item_id):
        raise RestError(400, "ACCESS_DENIED", localized(portal.language, "read_denied"))
    return Outcome({"item": copy.deepcopy(item)})


def crm_item_delete(portal: PortalState, caller: Caller, params: dict[str, Any]) -> Outcome:
    entity_type_id = bind_int(params, "entityTypeId")
    item_id = bind_int(params, "id")
    entity_type = portal.crm.factory(entity_type_id, portal.language)
    portal.crm.item(entity_type_id, item_id, portal.language)
    if not caller.may("delete", entity_type_id, item_id):
        raise RestError(400, "ACCESS_DENIED", localized(portal.language, "access_denied"))
    blocked = portal.crm.undeletable.get((entity_type_id, item_id))
    if blocked is not None:
        raise RestError(400, *blocked)
    portal.crm.remove(entity_type, item_id)
    return Outcome([])


def crm_item_list(portal: PortalState, caller: Caller, params: dict[str, Any]) -> Outcome:
    """Rows the caller may read, filtered, ordered, selected and paged as ``listing`` describes."""
    entity_type_id = bind_int(params, "entityTypeId")
    select = bind_array(params, "select")
    order = bind_array(params, "order")
    filter_ = bind_array(params, "filter")
    fields = portal.crm.factory(entity_type_id, portal.language).fields
    rows = [
        row for item_id, row in portal.crm.items[entity_type_id].items() if caller.may("read", entity_type_id, item_id)
    ]
    rows = filter_rows(rows, filter_, portal.tz, fields)
    rows = order_rows(rows, order, portal.tz, fields)
    selection = Selection.parse(select)
    return paged(params, rows, "items", selection.project)  # only the page is copied out


def crm_type_list(portal: PortalState, caller: Caller, params: dict[str, Any]) -> Outcome:
    rows = [t.to_rest() for t in portal.crm.types.values() if not t.system]
    rows = filter_rows(rows, bind_array(params, "filter"), portal.tz)
    rows = order_rows(rows, bind_array(params, "order"), portal.tz)
    return paged(params, rows, "types")


def scope(portal: PortalState, caller: Caller, params: dict[str, Any]) -> Outcome:
    return Outcome(sorted(caller.scopes))


def profile(portal: PortalState, caller: Caller, params: dict[str, Any]) -> Outcome:
    """``profile`` (any scope) [SRC rest_provider.php ``getProfile``; abridged]."""
    user = caller.user
    return Outcome({"ID": str(user.id), "ADMIN": user.admin, "NAME": user.name, "LAST_NAME": user.last_name})


def user_current(portal: PortalState, caller: Caller, params: dict[str, Any]) -> Outcome:
    """``user.current`` (scope ``user``, ``user_brief`` or ``user_basic``) [DOC user/user-current.md; abridged]."""
    user = caller.user
    return Outcome(
        {
            "ID": str(user.id),
            "ACTIVE": True,
            "NAME": user.name,
            "LAST_NAME": user.last_name,
            "EMAIL": user.email,
            "USER_TYPE": "employee" if user.intranet else "extranet",
            "UF_DEPARTMENT": [1] if user.intranet else [],
        }
    )


METHODS: dict[str, Handler] = {
    "crm.item.get": crm_item_get,
    "crm.item.delete": crm_item_delete,
    "crm.item.list": crm_item_list,
    "crm.type.list": crm_type_list,
    "scope": scope,
    "profile": profile,
    "user.current": user_current,
}
