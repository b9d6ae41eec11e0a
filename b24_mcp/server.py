"""The MCP layer: the `crm_item_delete` tool, its strict input model, and the person's confirmation."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx2
from mcp.server.mcpserver import AcceptedElicitation, Context, Elicit, ElicitationResult, MCPServer, Resolve
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field, field_validator

from b24_mcp import __version__
from b24_mcp.auth import make_auth
from b24_mcp.bulk import MAX_IDS, BatchResult, BulkDeletion
from b24_mcp.catalog import EntityType
from b24_mcp.confirmation import ConfirmationTokens
from b24_mcp.deletion import DeleteResult, DeletionService
from b24_mcp.gate import Answer, Consent, Guardrails, Question, Route, mode_hint, route_for
from b24_mcp.journal import Journal
from b24_mcp.limiter import LeakyBucket
from b24_mcp.portal import PortalClient
from b24_mcp.settings import OAuthConfig, Settings, Webhook

logger = logging.getLogger(__name__)

MAX_INT32 = 2_147_483_647
TOOL_NAME = "crm_item_delete"
TYPES_TOOL_NAME = "crm_entity_types"
BATCH_TOOL_NAME = "crm_item_delete_batch"


class DeleteItemInput(ArgModelBase):
    """The arguments of `crm_item_delete`: strict types, nothing unknown, nothing coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    entityTypeId: int = Field(
        title="Entity type id",
        ge=1,
        le=MAX_INT32,
        description=(
            "CRM type of the item: 1 lead, 2 deal, 3 contact, 4 company, 7 quote (estimate), 31 invoice. "
            "A smart process has its own id (e.g. 1038): list them with the crm_entity_types tool."
        ),
    )
    id: int = Field(title="Item id", ge=1, le=MAX_INT32, description="The item's id within that type.")
    dryRun: bool = Field(
        title="Dry run",
        default=True,
        description="true (default): delete nothing, return a preview of the item and a confirmationToken. "
        "false: really delete, once confirmed.",
    )
    confirmationToken: str | None = Field(
        title="Confirmation token",
        default=None,
        min_length=1,
        max_length=512,
        description="With dryRun: false, the confirmationToken from a preview of the same item, when the server "
        "asks for one (it expires and works once).",
    )


class DeleteBatchInput(ArgModelBase):
    """The arguments of `crm_item_delete_batch`: strict types, nothing unknown, nothing coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    entityTypeId: int = Field(
        title="Entity type id",
        ge=1,
        le=MAX_INT32,
        description="CRM type of all the items: 1 lead, 2 deal, 3 contact, 4 company, 7 quote, 31 invoice, or a "
        "smart process's id from crm_entity_types.",
    )
    ids: list[Annotated[int, Field(ge=1, le=MAX_INT32)]] = Field(
        title="Item ids",
        min_length=1,
        max_length=MAX_IDS,
        description=f"1 to {MAX_IDS} distinct item ids of that type.",
    )
    dryRun: bool = Field(
        title="Dry run",
        default=True,
        description="true (default): delete nothing; say which ids exist (with titles) and which do not, and give "
        "one confirmationToken for the set. false: delete them all, once confirmed.",
    )
    confirmationToken: str | None = Field(
        title="Confirmation token",
        default=None,
        min_length=1,
        max_length=512,
        description="With dryRun: false, the confirmationToken from a preview of the same ids.",
    )

    @field_validator("ids")
    @classmethod
    def _distinct(cls, ids: list[int]) -> list[int]:
        repeated = sorted({item_id for item_id in ids if ids.count(item_id) > 1})
        if repeated:
            raise ValueError(f"ids must be distinct; repeated: {', '.join(map(str, repeated[:10]))}")
        return ids


class NoInput(ArgModelBase):
    """A tool without arguments: any argument is refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class EntityTypesResult(BaseModel):
    """The CRM types of the portal."""

    types: list[EntityType]
    message: str
    error: str | None = Field(default=None, description="Why the smart processes are missing, when they are.")


class ConfirmDeletion(BaseModel):
    """The form the person answers."""

    delete: bool = Field(title="Delete it", description="Tick to delete the item.")


class NotAsked(BaseModel):
    """What the resolver gives when no question is put (preview, token mode, or the item cannot be read)."""


def can_ask(ctx: Context[Any, Any]) -> bool:
    """Whether this client declared form elicitation, so the person can be asked."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


def _asks(service: DeletionService, ctx: Context[Any, Any], dry_run: bool) -> bool:
    """Whether this call puts a question to the person: a real deletion, with the gate routing to asking."""
    return not dry_run and route_for(service.mode, can_ask=can_ask(ctx)) is Route.ASK


def _request_key(ctx: Context[Any, Any]) -> object:
    return (id(ctx.session), ctx.request_id)


def _put(
    service: DeletionService, ctx: Context[Any, Any], question: Question | None
) -> NotAsked | Elicit[ConfirmDeletion]:
    """Ask, remembering which version the question showed, so the deletion can check it is still that one."""
    if question is None:
        return NotAsked()
    service.shown.remember(_request_key(ctx), question.version)
    return Elicit(question.text, ConfirmDeletion)


async def ask_person_batch(
    entityTypeId: int, ids: list[int], dryRun: bool, ctx: Context[Any, Any]
) -> NotAsked | Elicit[ConfirmDeletion]:
    """The one question for a whole set, when the gate says so. Deterministic, as it may run twice."""
    service: DeletionService = ctx.request_context.lifespan_context
    question = await BulkDeletion(service).question(entityTypeId, ids) if _asks(service, ctx, dryRun) else None
    return _put(service, ctx, question)


async def ask_person(
    entityTypeId: int, id: int, dryRun: bool, ctx: Context[Any, Any]
) -> NotAsked | Elicit[ConfirmDeletion]:
    """Put the deletion question to the person when the gate says so. Deterministic, as it may run twice."""
    service: DeletionService = ctx.request_context.lifespan_context
    question = await service.question(entityTypeId, id) if _asks(service, ctx, dryRun) else None
    return _put(service, ctx, question)


def _consent(service: DeletionService, ctx: Context[Any, Any], token: str | None, outcome: Any) -> Consent:
    route = route_for(service.mode, can_ask=can_ask(ctx))
    shown = service.shown.pop(_request_key(ctx))
    if route is not Route.ASK:
        return Consent(route=route, token=token)
    if isinstance(outcome, AcceptedElicitation):
        data = outcome.data
        if isinstance(data, ConfirmDeletion):
            return Consent(route=route, answer=Answer.ACCEPTED if data.delete else Answer.DECLINED, shown=shown)
        return Consent(route=route, answer=Answer.NOT_ASKED)
    return Consent(route=route, answer=Answer.DECLINED if outcome.action == "decline" else Answer.CANCELLED)


def to_tool_result(result: DeleteResult | BatchResult) -> CallToolResult:
    """The MCP result: structured content, a one-line text, and `isError` for errors."""
    text = f"{result.error}: {result.message}" if result.status == "error" else result.message
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=result.wire(),
        is_error=result.status == "error",
    )


def _destructive(title: str) -> ToolAnnotations:
    return ToolAnnotations(
        title=title, read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True
    )


def _answered(tool: str, what: str, result: DeleteResult | BatchResult, started: float) -> CallToolResult:
    """Log the one line per call (no secret is among its parts) and turn the result into the MCP one."""
    error = f" {result.error}" if result.error else ""
    elapsed = (time.perf_counter() - started) * 1000
    logger.info("%s %s -> %s%s in %.0f ms", tool, what, result.status, error, elapsed)
    return to_tool_result(result)


def describe_tool(settings: Settings) -> str:
    """The tool description, with the confirmation mode and guardrails in force."""
    guardrails = Guardrails(read_only=settings.read_only, allowed_types=settings.allowed_entity_types).describe()
    return (
        "Delete one Bitrix24 CRM item (crm.item.delete), with a preview first. "
        "With dryRun: true (the default) nothing is deleted: the item is read and returned as a preview "
        "(title, stage, assignee, amount, whether it goes to the recycle bin) with a confirmationToken. Show the "
        "person the preview before deleting. Smart-process entityTypeIds come from the crm_entity_types tool. "
        + mode_hint(settings.confirm)
        + (f" Restrictions on this server: {guardrails}." if guardrails else "")
        + " Errors come back with the portal's code (NOT_FOUND, ACCESS_DENIED, ...) and whether a retry can help."
    )


def describe_batch_tool(settings: Settings) -> str:
    """The bulk tool's description, with the confirmation mode in force."""
    return (
        f"Delete up to {MAX_IDS} Bitrix24 CRM items of one type with one confirmation (through the portal's batch "
        "method, 50 per request). With dryRun: true (the default) nothing is deleted: the items are read and the "
        "result lists which exist (with titles) and which do not, with one confirmationToken for the set. Show "
        "the person that list before deleting. "
        + mode_hint(settings.confirm).replace("same item", "same ids")
        + " The result reports each id (deleted or error with the portal's code); one failed item does not stop "
        "the others. For a single item use crm_item_delete."
    )


def build_service(
    settings: Settings,
    credentials: Webhook | OAuthConfig,
    transport: httpx2.AsyncBaseTransport | None = None,
    *,
    retry_base: float = 0.5,
) -> DeletionService:
    """Assemble the deletion service from the settings (no network until the first call)."""
    secret = settings.confirm_secret.get_secret_value().encode() if settings.confirm_secret else secrets.token_bytes(32)
    portal = PortalClient(
        make_auth(credentials),
        timeout=settings.timeout,
        ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
        transport=transport,
        limiter=LeakyBucket(settings.rate_burst, settings.rate_per_second),
        max_retries=settings.max_retries,
        retry_base=retry_base,
    )
    return DeletionService(
        portal,
        ConfirmationTokens(secret, portal=portal.identity, ttl=settings.confirm_ttl),
        Journal(settings.audit_log),
        mode=settings.confirm,
        guardrails=Guardrails(read_only=settings.read_only, allowed_types=settings.allowed_entity_types),
        call_deadline=settings.call_deadline,
    )


def build_server(
    settings: Settings,
    *,
    transport: httpx2.AsyncBaseTransport | None = None,
    credentials: Webhook | OAuthConfig | None = None,
    retry_base: float = 0.5,
    server_options: dict[str, Any] | None = None,
    service: DeletionService | None = None,
) -> MCPServer:
    """The MCP server for the configured portal; `transport` lets the sandbox serve the portal in-process.

    One deletion service serves every connection of the process: one HTTP pool, one rate limiter, one record of
    spent confirmation tokens.
    """
    shared = service or build_service(settings, credentials or settings.credentials, transport, retry_base=retry_base)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[DeletionService]:
        try:
            yield shared
        finally:
            await shared.portal.aclose()

    server = MCPServer(
        "b24-mcp",
        version=__version__,
        lifespan=lifespan,
        log_level=settings.log_level,
        **(server_options or {}),
        instructions="Deletes Bitrix24 CRM items on "
        f"{shared.portal.host}. Always preview first (the default) and let the person see what would be deleted.",
    )

    @server.tool(
        name=TOOL_NAME,
        title="Delete CRM item",
        description=describe_tool(settings),
        annotations=_destructive("Delete CRM item"),
    )
    async def crm_item_delete(
        entityTypeId: int,
        id: int,
        ctx: Context[Any, Any],
        consent: Annotated[ElicitationResult[ConfirmDeletion], Resolve(ask_person)],
        dryRun: bool = True,
        confirmationToken: str | None = None,
    ) -> Annotated[CallToolResult, DeleteResult]:
        started = time.perf_counter()
        service: DeletionService = ctx.request_context.lifespan_context
        if dryRun:
            result = await service.preview(entityTypeId, id, can_ask=can_ask(ctx))
        else:
            result = await service.delete(entityTypeId, id, _consent(service, ctx, confirmationToken, consent))
        return _answered(TOOL_NAME, f"entityTypeId={entityTypeId} id={id} dryRun={dryRun}", result, started)

    @server.tool(
        name=TYPES_TOOL_NAME,
        title="List CRM entity types",
        description="List the CRM types of this portal with their entityTypeId: the system types (lead 1, deal 2, "
        "contact 3, company 4, quote 7, invoice 31) and the smart processes, and whether a deleted item of each "
        "goes to the recycle bin (restorable). Use it to find the entityTypeId for crm_item_delete. Read-only.",
        annotations=ToolAnnotations(
            title="List CRM entity types",
            read_only_hint=True,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=True,
        ),
    )
    async def crm_entity_types(ctx: Context[Any, Any]) -> EntityTypesResult:
        service: DeletionService = ctx.request_context.lifespan_context
        with service.portal.deadline(service.call_deadline):
            types, error = await service.catalog.all()
        if service.guardrails.allowed_types is not None:
            types = [entry for entry in types if entry.entityTypeId in service.guardrails.allowed_types]
        message = f"{len(types)} types."
        if error is not None:
            message += (
                f" The smart processes could not be listed ({error.code}: {error.description}); "
                "listing them needs CRM administrator rights. System types are shown."
            )
        if service.guardrails.allowed_types is not None:
            message += " Only the types this server is allowed to touch (B24_ALLOWED_ENTITY_TYPES) are shown."
        logger.info("%s -> %d types%s", TYPES_TOOL_NAME, len(types), f" ({error.code})" if error else "")
        return EntityTypesResult(types=types, message=message, error=error.code if error else None)

    @server.tool(
        name=BATCH_TOOL_NAME,
        title="Delete CRM items in bulk",
        description=describe_batch_tool(settings),
        annotations=_destructive("Delete CRM items in bulk"),
    )
    async def crm_item_delete_batch(
        entityTypeId: int,
        ids: list[int],
        ctx: Context[Any, Any],
        consent: Annotated[ElicitationResult[ConfirmDeletion], Resolve(ask_person_batch)],
        dryRun: bool = True,
        confirmationToken: str | None = None,
    ) -> Annotated[CallToolResult, BatchResult]:
        started = time.perf_counter()
        service: DeletionService = ctx.request_context.lifespan_context
        bulk = BulkDeletion(service)
        if dryRun:
            result = await bulk.preview(entityTypeId, ids, can_ask=can_ask(ctx))
        else:

            async def progress(done: int, total: int, message: str) -> None:
                await ctx.report_progress(done, total, message)

            consent_given = _consent(service, ctx, confirmationToken, consent)
            result = await bulk.delete(entityTypeId, ids, consent_given, progress)
        what = f"entityTypeId={entityTypeId} ids={len(ids)} dryRun={dryRun}"
        return _answered(BATCH_TOOL_NAME, what, result, started)

    _use_input_model(server, TOOL_NAME, DeleteItemInput)
    _use_input_model(server, BATCH_TOOL_NAME, DeleteBatchInput)
    _use_input_model(server, TYPES_TOOL_NAME, NoInput)
    return server


def _use_input_model(server: MCPServer, name: str, model: type[ArgModelBase]) -> None:
    """Validate a tool's arguments with our strict model instead of the one derived from its signature.

    The derived model coerces ("101" → 101) and ignores unknown keys; ours refuses both, and its schema
    (with `additionalProperties: false`) is what clients see.
    """
    tool = server._tool_manager.get_tool(name)
    if tool is None:
        raise LookupError(name)
    tool.fn_metadata.arg_model = model
    tool.parameters = model.model_json_schema(by_alias=True)
