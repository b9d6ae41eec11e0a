"""Records to stored text and back, shared by the SQLite and PostgreSQL stores; secrets sealed on the way in."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mcp.shared.auth import OAuthClientInformationFull

from b24_mcp.secure.sealing import Sealer
from b24_mcp.signin.records import Authorization, AwaitingConsent, BitrixTokens, Grant, IssuedCode, Person, SignedIn


def _grant_json(grant: Grant) -> dict[str, Any]:
    return {
        "client_id": grant.client_id,
        "user_id": grant.user_id,
        "scopes": list(grant.scopes),
        "resource": grant.resource,
        "family": grant.family,
        "expires_at": grant.expires_at,
    }


def _grant_from(data: dict[str, Any]) -> Grant:
    return Grant(
        client_id=str(data["client_id"]),
        user_id=int(data["user_id"]),
        scopes=tuple(str(scope) for scope in data["scopes"]),
        resource=str(data["resource"]),
        family=str(data["family"]),
        expires_at=float(data["expires_at"]),
    )


def authorization_json(authorization: Authorization) -> str:
    """`authorization` as the stores keep it (`authorization_from` reads it back)."""
    return json.dumps(
        {
            "client_id": authorization.client_id,
            "redirect_uri": authorization.redirect_uri,
            "redirect_uri_explicit": authorization.redirect_uri_explicit,
            "code_challenge": authorization.code_challenge,
            "state": authorization.state,
            "scopes": list(authorization.scopes),
            "resource": authorization.resource,
            "expires_at": authorization.expires_at,
        }
    )


def authorization_from(data: dict[str, Any]) -> Authorization:
    """The authorization `authorization_json` wrote, from its parsed object."""
    return Authorization(
        client_id=str(data["client_id"]),
        redirect_uri=str(data["redirect_uri"]),
        redirect_uri_explicit=bool(data["redirect_uri_explicit"]),
        code_challenge=str(data["code_challenge"]),
        state=None if data["state"] is None else str(data["state"]),
        scopes=tuple(str(scope) for scope in data["scopes"]),
        resource=str(data["resource"]),
        expires_at=float(data["expires_at"]),
    )


def issued_code_json(issued: IssuedCode) -> str:
    """`issued` as the stores keep it (`issued_code_from` reads it back)."""
    return json.dumps(
        {
            "grant": _grant_json(issued.grant),
            "code_challenge": issued.code_challenge,
            "redirect_uri": issued.redirect_uri,
            "redirect_uri_explicit": issued.redirect_uri_explicit,
        }
    )


def issued_code_from(data: str) -> IssuedCode:
    """The issued code in `issued_code_json`'s text."""
    raw = json.loads(data)
    return IssuedCode(
        _grant_from(raw["grant"]),
        str(raw["code_challenge"]),
        str(raw["redirect_uri"]),
        raw["redirect_uri_explicit"],
    )


def grant_from_row(row: Sequence[Any]) -> Grant:
    """The grant of a tokens row selected as `family, client_id, user_id, scopes, resource, expires_at`."""
    return Grant(row[1], int(row[2]), tuple(row[3].split()), row[4], row[0], float(row[5]))


def access_from_row(row: Sequence[Any]) -> tuple[Grant, Person]:
    """The grant and active person of an access token's row: `grant_from_row`'s columns, then the person's
    `name, member_id, signed_in_at, last_used_at, version`."""
    return grant_from_row(row), Person(int(row[2]), row[6], row[7], float(row[8]), row[9], int(row[10]), True)


def person_from_row(row: Sequence[Any]) -> Person:
    """A person from a people row selected as
    `user_id, name, member_id, signed_in_at, last_used_at, version, access IS NOT NULL`."""
    return Person(int(row[0]), str(row[1]), str(row[2]), float(row[3]), row[4], int(row[5]), bool(row[6]))


def seal_client(sealer: Sealer, client: OAuthClientInformationFull) -> tuple[str, str | None]:
    """What the stores keep of a registered client: its information without the secret, and the secret sealed."""
    info = client.model_dump_json(exclude={"client_secret"}, exclude_none=True)
    sealed = sealer.seal(client.client_secret, f"client:{client.client_id}") if client.client_secret else None
    return info, sealed


def open_client(sealer: Sealer, client_id: str, info: str, sealed: str | None) -> OAuthClientInformationFull | None:
    """The client `seal_client` kept; None when its secret was sealed with another key (it registers again)."""
    client = OAuthClientInformationFull.model_validate_json(info)
    if sealed is not None:
        secret = sealer.open(sealed, f"client:{client_id}")
        if secret is None:
            return None
        client = client.model_copy(update={"client_secret": secret})
    return client


def seal_tokens(sealer: Sealer, tokens: BitrixTokens, where: str) -> tuple[str, str | None]:
    """`tokens` sealed for the row `where` (`person:<user id>`, `consent:<digest>`): access, refresh or None."""
    access = sealer.seal(tokens.access, f"{where}:access")
    refresh = sealer.seal(tokens.refresh, f"{where}:refresh") if tokens.refresh else None
    return access, refresh


def open_tokens(sealer: Sealer, access: str, refresh: str | None, where: str) -> BitrixTokens | None:
    """The tokens sealed for the row `where`; None when either cannot be opened (another key, another row)."""
    opened = sealer.open(access, f"{where}:access")
    opened_refresh = sealer.open(refresh, f"{where}:refresh") if refresh is not None else None
    if opened is None or (refresh is not None and opened_refresh is None):
        return None
    return BitrixTokens(opened, opened_refresh)


def consent_json(waiting: AwaitingConsent) -> str:
    """What a waiting consent keeps besides its sealed tokens and expiry."""
    person = waiting.person
    return json.dumps(
        {
            "authorization": json.loads(authorization_json(waiting.authorization)),
            "member_id": person.member_id,
            "user_id": person.user_id,
            "name": person.name,
        }
    )


def consent_from(data: str, tokens: BitrixTokens, expires_at: float) -> AwaitingConsent:
    """A waiting consent from `consent_json`'s text and its opened tokens."""
    fields = json.loads(data)
    person = SignedIn(str(fields["member_id"]), int(fields["user_id"]), str(fields["name"]), tokens)
    return AwaitingConsent(authorization_from(fields["authorization"]), person, expires_at)
