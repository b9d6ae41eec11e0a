"""The fields of a CRM type: the system fields each type has, and the user fields declared on it with their type.

``crm.item.list`` lets a filter (and an order) name only these; any other name is ``400 INVALID_ARG_VALUE``
"Invalid filter: field '…' is not allowed in filter" [DOC crm-item-list.md, errors; spec §10]. The system fields are
those of [DOC api-reference/crm/universal/object-fields.md]: the common ones, then each type's own (a smart process
has the SPA list). Names are matched in either spelling, camelCase or UPPER_SNAKE (``stageId``, ``STAGE_ID``).

Booleans come in two kinds [DOC crm-item-list.md, ``filter``; spec §10]:

* the system's own boolean fields (``opened``, ``isManualOpportunity``, ``closed``, …) hold ``Y``/``N`` and a
  filter compares them with ``Y``/``N``;
* a user field of type ``boolean`` is a number column on the portal (1 or 0), answered as ``Y``/``N``; a filter
  compares the column with the value read as a number, so ``1``/``0`` work and ``Y``/``N`` (PHP reads any such
  text as 0) select the items where the field is off.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from b24_mcp.sandbox.php import php_number

__all__ = ["SYSTEM_BOOLEANS", "USER_FIELD_TYPES", "Fields", "column_number", "norm", "stored_boolean"]

USER_FIELD_TYPES = frozenset(
    {"string", "integer", "double", "boolean", "date", "datetime", "enumeration", "employee", "file", "url", "money"}
)

_COMMON = (
    "id entityTypeId assignedById createdBy createdTime updatedBy updatedTime lastActivityBy lastActivityTime opened "
    "utmCampaign utmContent utmMedium utmSource utmTerm webformId"
)
_PEOPLE = (
    "name lastName secondName shortName honorific birthdate post address comments hasPhone hasEmail hasImol login "
    "phone phoneMobile phoneWork phoneMailing email emailHome emailWork emailMailing skype icq imol fm observers"
)
_BY_TYPE = {
    1: f"{_PEOPLE} dateCreateShort dateModifyShort companyId contactId stageId isConvert statusDescription "
    "stageSemanticId productId opportunity currencyId sourceId sourceDescription title companyTitle originatorId "
    "originId dateClosed isReturnCustomer searchContent isManualOpportunity movedBy movedTime contactIds",
    2: "dateCreateShort dateModifyShort leadId companyId contactId quoteId title productId categoryId stageId "
    "stageSemanticId isNew isRecurring isReturnCustomer isRepeatedApproach closed typeId opportunity "
    "isManualOpportunity taxValue currencyId probability comments begindate begindateShort closedate "
    "closedateShort eventDate eventDateShort eventId eventDescription locationId sourceId sourceDescription "
    "originatorId originId additionalInfo searchContent orderStage movedBy movedTime isWork isWon isLose "
    "receivedAmount lostAmount hasProducts observers contactIds",
    3: f"{_PEOPLE} companyId sourceId sourceDescription photo leadId export typeId originatorId originId "
    "originVersion searchContent categoryId companyIds",
    4: "title logo address addressLegal bankingDetails comments typeId industry revenue currencyId employees leadId "
    "originatorId originId originVersion hasPhone hasEmail hasImol isMyCompany searchContent categoryId phone "
    "phoneMobile phoneWork phoneMailing email emailHome emailWork emailMailing imol ufLogo ufStamp ufDirectorSign "
    "ufAccountantSign observers contactIds fm",
    7: "dateCreateShort dateModifyShort leadId dealId companyId contactId personTypeId mycompanyId title stageId "
    "closed opportunity isManualOpportunity taxValue currencyId comments commentsType begindate begindateShort "
    "closedate closedateShort quoteNumber content contentType terms termsType storageTypeId storageElementIds "
    "locationId clientTitle clientAddr clientContact clientEmail clientPhone clientTpId clientTpaId searchContent "
    "hasProducts actualDate contactIds",
    31: "xmlId title movedBy movedTime categoryId stageId previousStageId begindate closedate companyId contactId "
    "opportunity isManualOpportunity taxValue currencyId mycompanyId sourceId sourceDescription comments "
    "accountNumber locationId observers contactIds",
}
_SMART_PROCESS = (
    "xmlId title movedBy movedTime categoryId stageId previousStageId begindate closedate companyId contactId "
    "opportunity isManualOpportunity taxValue currencyId opportunityAccount taxValueAccount accountCurrencyId "
    "mycompanyId sourceId sourceDescription observers contactIds"
)
# The system fields of type boolean: Y/N in answers and in filters.
SYSTEM_BOOLEANS = frozenset(
    {
        *("opened", "isManualOpportunity", "closed", "isConvert", "hasPhone", "hasEmail", "hasImol"),
        *("isReturnCustomer", "isNew", "isRecurring", "isRepeatedApproach", "isWork", "isWon", "isLose"),
        *("hasProducts", "export", "isMyCompany"),
    }
)
_PARENT = re.compile(r"parentid\d+")  # parentId<entityTypeId>: a link to an item of another type
_USER_FIELD = re.compile(r"ufcrm[a-z0-9]*")  # ufCrm…, UF_CRM_… once normalized
_TRUE = (True, 1, "1", "Y", "y", "true")


def norm(name: str) -> str:
    """A field name as both its spellings give it: ``stageId`` and ``STAGE_ID`` are ``stageid``."""
    return name.replace("_", "").lower()


def stored_boolean(value: Any) -> str:
    """A user boolean as the portal keeps it, in the ``Y``/``N`` its answers show [SRC item.php
    ``prepareBooleanFieldValue``: ``true``, ``"Y"``, ``"y"``, ``"true"`` are true; 1 as the column's own value]."""
    return "Y" if value in _TRUE and not isinstance(value, float) else "N"


def column_number(value: Any) -> Any:
    """A filter value as the number column of a user boolean reads it: a number as it is, any other text 0."""
    if isinstance(value, dict):
        return {key: column_number(element) for key, element in value.items()}
    if isinstance(value, list):
        return [column_number(element) for element in value]
    number = php_number(value)
    return 0.0 if number is None else number


_NORMALIZED_BOOLEANS = frozenset(norm(name) for name in SYSTEM_BOOLEANS)


@dataclass
class Fields:
    """The fields of one CRM type: its system fields and its declared user fields (normalized name -> type)."""

    system: frozenset[str]
    user: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_type(cls, entity_type_id: int, *, system: bool) -> Fields:
        """The system fields of a type as the documentation lists them (a smart process: the SPA list)."""
        own = _BY_TYPE.get(entity_type_id, "") if system else _SMART_PROCESS
        return cls(frozenset(norm(name) for name in f"{_COMMON} {own}".split()))

    def declare(self, name: str, user_type: str) -> None:
        """Declare a user field (``ufCrm…`` / ``UF_CRM_…``) of one of ``USER_FIELD_TYPES``."""
        if not _USER_FIELD.fullmatch(norm(name)):
            raise ValueError(f"a user field is named ufCrm… or UF_CRM_…, not {name!r}")
        if user_type not in USER_FIELD_TYPES:
            raise ValueError(f"unknown user field type {user_type!r}")
        self.user[norm(name)] = user_type

    def knows(self, name: str) -> bool:
        """Whether a filter or an order may name this field."""
        key = norm(name)
        return key in self.system or key in self.user or _PARENT.fullmatch(key) is not None

    def is_user_boolean(self, name: str) -> bool:
        return self.user.get(norm(name)) == "boolean"

    def store(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` as the portal keeps them: undeclared user fields declared with the type their value
        suggests, booleans (the system's and the user's) as ``Y``/``N``."""
        kept = dict(values)
        for name, value in values.items():
            if norm(name) in _NORMALIZED_BOOLEANS and isinstance(value, bool):
                kept[name] = stored_boolean(value)
            if not _USER_FIELD.fullmatch(norm(name)):
                continue
            if norm(name) not in self.user:
                self.declare(name, _suggested_type(value))
            if self.is_user_boolean(name) and value is not None:
                kept[name] = stored_boolean(value)
        return kept


def _suggested_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    return "string"
