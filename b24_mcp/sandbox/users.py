"""The portal's people and their credentials: users with names and CRM permissions, incoming webhooks, and who is
calling (``Caller``).

Permissions follow the crm controller [SRC crm/lib/controller/item.php]: ``crm.item.get`` checks ``canReadItem``
after the item is found (400 ``ACCESS_DENIED`` "You don't have permission to view this item."),
``crm.item.delete`` checks ``canDeleteItem`` after the item is found (400 ``ACCESS_DENIED`` "Access denied"),
``crm.item.list`` silently leaves out what the user may not read (``getItemsFilteredByPermissions``; ``total``
counts only the rest). Spec §1.2 step 7, §1.4, §7.1, §7.2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Action", "Caller", "Directory", "User", "Webhook"]

Action = Literal["read", "delete"]


@dataclass
class User:
    """A person of the portal and what they may do with CRM items.

    ``can_read``/``can_delete`` grant or refuse an action on every type; ``deny`` refuses it for one type or one
    item of a type, ``allow`` lifts such a denial.
    """

    id: int
    name: str = ""
    last_name: str = ""
    email: str = ""
    admin: bool = False
    intranet: bool = True
    can_read: bool = True
    can_delete: bool = True
    denied: set[tuple[Action, int, int | None]] = field(default_factory=set)

    def deny(self, action: Action, entity_type_id: int, item_id: int | None = None) -> None:
        """Refuse ``action`` on the items of a type (``item_id=None``) or on one item."""
        self.denied.add((action, entity_type_id, item_id))

    def allow(self, action: Action, entity_type_id: int, item_id: int | None = None) -> None:
        """Lift a denial made with the same arguments."""
        self.denied.discard((action, entity_type_id, item_id))

    def may(self, action: Action, entity_type_id: int, item_id: int) -> bool:
        granted = self.can_read if action == "read" else self.can_delete
        return (
            granted
            and (action, entity_type_id, None) not in self.denied
            and (action, entity_type_id, item_id) not in self.denied
        )


@dataclass
class Webhook:
    """One incoming webhook of the portal (the credential is the pair user id + code).

    It acts as its user. When that user is not registered, ``add_webhook`` registers them from the name and
    rights given here; ``intranet``, ``can_read`` and ``can_delete`` further limit what calls through this
    webhook may do.
    """

    user_id: int
    code: str
    scopes: frozenset[str] = frozenset({"crm"})
    intranet: bool = True
    can_read: bool = True
    can_delete: bool = True
    admin: bool = False
    name: str = ""
    last_name: str = ""


@dataclass(frozen=True)
class Caller:
    """Who is calling: the user, the scopes of the credential, and the key the operating-time limiter charges."""

    user: User
    scopes: frozenset[str]
    credential: str
    holder: str  # "webhook token" or "access token", as the insufficient_scope text names it
    webhook: Webhook | None = None

    @property
    def user_id(self) -> int:
        return self.user.id

    @property
    def intranet(self) -> bool:
        return self.user.intranet and (self.webhook is None or self.webhook.intranet)

    def may(self, action: Action, entity_type_id: int, item_id: int) -> bool:
        if self.webhook is not None and not (self.webhook.can_read if action == "read" else self.webhook.can_delete):
            return False
        return self.user.may(action, entity_type_id, item_id)


class Directory:
    """Users by id and webhooks by (user id, code)."""

    def __init__(self) -> None:
        self.users: dict[int, User] = {}
        self.webhooks: dict[tuple[int, str], Webhook] = {}

    def add_user(self, user: User) -> User:
        self.users[user.id] = user
        return user

    def add_webhook(self, webhook: Webhook) -> None:
        self.webhooks[(webhook.user_id, webhook.code)] = webhook
        if webhook.user_id not in self.users:
            self.add_user(
                User(
                    webhook.user_id,
                    name=webhook.name,
                    last_name=webhook.last_name,
                    admin=webhook.admin,
                    intranet=webhook.intranet,
                    can_read=webhook.can_read,
                    can_delete=webhook.can_delete,
                )
            )

    def user(self, user_id: int) -> User:
        """The registered user, or an unnamed one with every right (a token issued for an unknown user)."""
        return self.users.get(user_id) or User(user_id)

    def webhook_caller(self, webhook: Webhook) -> Caller:
        credential = f"webhook:{webhook.user_id}:{webhook.code}"
        return Caller(self.user(webhook.user_id), webhook.scopes, credential, "webhook token", webhook)
