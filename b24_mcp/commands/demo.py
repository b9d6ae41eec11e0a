"""`b24-mcp demo`: a scripted walk-through against the sandbox, through a real stdio server and MCP client."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, ElicitRequestParams, ElicitResult

from b24_mcp.journal.reader import print_journal

_WIDTH = 100


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(title: str) -> None:
    _say()
    _say(f"── {title} " + "─" * max(0, _WIDTH - len(title) - 4))


def _show_result(result: CallToolResult) -> dict[str, Any]:
    data = dict(result.structured_content or {})
    label = "isError" if result.is_error else "ok"
    _say(f"  ← [{label}] status={data.get('status')}" + (f" error={data['error']}" if data.get("error") else ""))
    for line in textwrap.wrap(str(data.get("message", "")), _WIDTH - 6):
        _say(f"    {line}")
    if data.get("item"):
        _say(f"    item: {json.dumps(data['item'], ensure_ascii=False)}")
    return data


async def _call(client: Client, arguments: dict[str, Any]) -> dict[str, Any]:
    shown = {k: (v[:16] + "…" if k == "confirmationToken" else v) for k, v in arguments.items()}
    _say(f"  → crm_item_delete {json.dumps(shown, ensure_ascii=False)}")
    return _show_result(await client.call_tool("crm_item_delete", arguments))


def _server(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "b24_mcp", "--sandbox"], env=env)


async def _walkthrough(env: dict[str, str]) -> None:
    _step("1. An assistant starts `b24-mcp --sandbox` over stdio and lists the tools")
    async with Client(_server(env)) as client:
        for tool in (await client.list_tools()).tools:
            hints = tool.annotations
            _say(f"  {tool.name} — {tool.title}; destructiveHint={hints.destructive_hint if hints else None}")
            _say(f"    arguments: {', '.join(tool.input_schema.get('properties', {})) or 'none'}")

        _step("2. Preview (the default): nothing is deleted, the item is shown with a confirmation token")
        preview = await _call(client, {"entityTypeId": 2, "id": 42})

        _step("3. A delete without confirmation is refused; nothing reaches crm.item.delete")
        await _call(client, {"entityTypeId": 2, "id": 42, "dryRun": False})

        _step("4. A delete confirmed with the preview's token")
        token = str(preview["confirmationToken"])
        await _call(client, {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": token})

        _step("5. The same delete again: the portal says NOT_FOUND, passed through as it was sent")
        await _call(client, {"entityTypeId": 2, "id": 42, "dryRun": False, "confirmationToken": token})

        _step("6. Which types are there? crm_entity_types (read-only) lists them with their recycle-bin setting")
        types = (await client.call_tool("crm_entity_types", {})).structured_content or {}
        for entry in types.get("types", []):
            bin_ = {True: "recycle bin", False: "deleted permanently", None: "unknown"}[entry.get("recycleBin")]
            _say(f"    {entry['entityTypeId']:>5}  {entry['title']:<20} {entry['kind']:<14} {bin_}")

        _step("7. A clean-up in bulk: one preview and one token for several leads (crm_item_delete_batch)")
        bulk = {"entityTypeId": 1, "ids": [11, 12, 13, 99]}
        _say(f"  → crm_item_delete_batch {json.dumps(bulk)}")
        preview_bulk = _show_result(await client.call_tool("crm_item_delete_batch", bulk))
        confirmed = bulk | {"dryRun": False, "confirmationToken": preview_bulk["confirmationToken"]}
        _say('  → crm_item_delete_batch {… "dryRun": false, "confirmationToken": "b24c1.…"}')
        done = _show_result(await client.call_tool("crm_item_delete_batch", confirmed))
        for entry in done.get("results", []):
            _say(f"    #{entry['id']}: {entry['status']}" + (f" ({entry['error']})" if entry.get("error") else ""))
        if done.get("missing"):
            _say(f"    missing, not included: {', '.join(map(str, done['missing']))}")

        _step("8. A clean-up by filter: the small deals that are new or lost, found by crm.item.list, one token")
        cleanup = {"entityTypeId": 2, "filter": {"@stageId": ["NEW", "LOSE"], "<opportunity": 5000}}
        _say(f"  → crm_item_delete_batch {json.dumps(cleanup)}")
        listed = _show_result(await client.call_tool("crm_item_delete_batch", cleanup))
        summary = json.dumps(listed.get("summary"))
        _say(f"    matched={listed.get('matched')} more={listed.get('more')}, summary {summary}")
        for entry in listed.get("found", []):
            _say(f"    #{entry['id']} {json.dumps(entry.get('title'), ensure_ascii=False)} ({entry.get('stageId')})")
        confirmed = cleanup | {"dryRun": False, "confirmationToken": listed["confirmationToken"]}
        _say('  → crm_item_delete_batch {… "filter": {…}, "dryRun": false, "confirmationToken": "b24c1.…"}')
        cleaned = _show_result(await client.call_tool("crm_item_delete_batch", confirmed))
        _say(
            f"    deleted={cleaned.get('deleted')} failed={cleaned.get('failed')} remaining={cleaned.get('remaining')}"
        )

    async def person(answer: str) -> Any:
        async def callback(context: Any, params: ElicitRequestParams) -> ElicitResult:
            _say(f"  ? the client asks the person: {getattr(params, 'message', '')}")
            _say(f"  ! the person answers: {answer}")
            if answer == "yes":
                return ElicitResult(action="accept", content={"delete": True})
            return ElicitResult(action="decline")

        return callback

    _step("9. A client that can ask the person (MCP elicitation): the person confirms in their client")
    async with Client(_server(env), elicitation_callback=await person("yes")) as client:
        await _call(client, {"entityTypeId": 2, "id": 43, "dryRun": False})

    _step("10. The person says no: nothing is deleted, and the assistant is told not to insist")
    async with Client(_server(env), elicitation_callback=await person("no")) as client:
        await _call(client, {"entityTypeId": 4, "id": 31, "dryRun": False})


def run_demo(journal: Path) -> int:
    """Run the walk-through; its journal goes to `journal`, the sandbox's, which `b24-mcp journal --sandbox` shows."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("B24_")}
    env |= {"B24_AUDIT_LOG": str(journal), "B24_CONFIRM": "auto", "B24_LOG_LEVEL": "WARNING"}
    _say("b24-mcp demo: a real MCP client talks to a real `b24-mcp --sandbox` process over stdio.")
    _say("The sandbox is an emulated Bitrix24 portal inside that process; nothing real is touched.")
    anyio.run(_walkthrough, env)
    _step("11. The audit journal (`b24-mcp journal --sandbox`): every attempt, with a snapshot of what was deleted")
    print_journal(journal, limit=30, as_json=False)
    return 0
