"""Every tool result the suite receives is checked against the output schema the server lists.

The TypeScript SDK's 1.x client validates `structuredContent` against the tool's `outputSchema` for every result,
errors included, and replaces one that does not conform with a protocol error; the Python SDK checks successes
only. `ToolResultCheck` wraps the one method every test's tool call goes through (`ClientSession.call_tool`,
under `Client` in memory, over stdio and over HTTP), so each result is held to the stricter rule, with a JSON
Schema validator over the very schemas `tools/list` returned on that session.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

import pytest
from jsonschema import Draft202012Validator
from mcp.client.session import ClientSession
from mcp.types import CallToolResult

_listed: WeakKeyDictionary[ClientSession, dict[str, Draft202012Validator | None]] = WeakKeyDictionary()


async def output_validators(session: ClientSession) -> dict[str, Draft202012Validator | None]:
    """Each tool's output-schema validator as this session's server lists it (None: the tool has no schema)."""
    if session not in _listed:
        validators: dict[str, Draft202012Validator | None] = {}
        for tool in (await session.list_tools()).tools:
            schema = tool.output_schema
            if schema is not None:
                Draft202012Validator.check_schema(schema)
            validators[tool.name] = Draft202012Validator(schema) if schema is not None else None
        _listed[session] = validators
    return _listed[session]


def assert_conforms(name: str, result: CallToolResult, validator: Draft202012Validator | None) -> None:
    """`result` is what a strict client accepts from tool `name`: structured content valid against its schema, and
    present unless the result is an error."""
    if validator is None:
        return
    content = result.structured_content
    if content is None:
        assert result.is_error, f"{name} has an output schema but returned no structured content"
        return
    problems = [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(content)
    ]
    assert not problems, f"{name}'s structured content does not match its output schema: {problems}; {content}"


class ToolResultCheck:
    """Checks every `ClientSession.call_tool` result with `assert_conforms` while installed. A failure is kept, not
    raised (a test expecting some exception from the call could swallow it): `verify` reports them all at the end."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Wrap `ClientSession.call_tool` until `monkeypatch` is undone."""
        call_tool = ClientSession.call_tool
        problems = self.problems

        async def checked(self: ClientSession, name: str, *args: Any, **kwargs: Any) -> Any:
            try:  # listed before the call, so a server that stops right after it is still checked
                validators: dict[str, Draft202012Validator | None] | None = await output_validators(self)
            except Exception:  # the call itself will say what is wrong with the connection
                validators = None
            result = await call_tool(self, name, *args, **kwargs)
            if isinstance(result, CallToolResult):
                if validators is None:
                    problems.append(f"{name} answered, but its output schema could not be listed")
                elif name in validators:
                    try:
                        assert_conforms(name, result, validators[name])
                    except AssertionError as failure:
                        problems.append(str(failure))
            return result

        monkeypatch.setattr(ClientSession, "call_tool", checked)

    def verify(self) -> None:
        """Fail with every result that did not conform."""
        assert not self.problems, "\n".join(self.problems)
