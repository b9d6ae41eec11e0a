"""Strict tool arguments, checked at the edge before anything else runs.

Each tool declares its arguments once, in its function's signature. From that signature this module derives a
strict model (no coercion, unknown arguments refused), and an MCP server middleware (the SDK's public
`middleware=` hook) applies it to every `tools/call` before the SDK's own, lenient validation: a bad call gets
a structured `INVALID_ARGUMENTS` error and the tool never runs. The same middleware marks the published input
schemas with `additionalProperties: false`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Annotated, Any, get_args, get_origin

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, Resolve
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from b24_mcp.deleting.results import INVALID_ARGUMENTS


def strict_model(fn: Callable[..., Any]) -> type[BaseModel]:
    """A strict, closed model of `fn`'s tool arguments: every parameter but the context and the resolved ones."""
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(fn).parameters.items():
        annotation = hints.get(name, Any)
        if _is_context(annotation) or _is_resolved(annotation):
            continue
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (annotation, default)
    config = ConfigDict(extra="forbid", strict=True)
    model: type[BaseModel] = create_model(f"{fn.__name__}_arguments", __config__=config, **fields)
    return model


def _is_context(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Context)


def _is_resolved(annotation: Any) -> bool:
    return get_origin(annotation) is Annotated and any(isinstance(meta, Resolve) for meta in get_args(annotation)[1:])


def explain(error: ValidationError, model: type[BaseModel]) -> str:
    """Each bad argument by name, with what it must be; never the rejected value (it is the caller's data)."""
    known = ", ".join(model.model_fields)
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        kind = problem["type"]
        if kind == "extra_forbidden":
            lines.append(f"{where}: unknown argument (the arguments are {known})")
        elif kind == "missing":
            lines.append(f"{where}: required")
        else:
            lines.append(f"{where}: {str(problem['msg']).removeprefix('Value error, ')}")
    return "; ".join(lines)


def invalid_arguments(tool: str, description: str, **known: Any) -> CallToolResult:
    """The result of a call whose arguments were refused: nothing was read or deleted.

    `known`: arguments valid on their own, echoed as the tool's other results echo them (its output schema lets a
    refused call's result leave them out).
    """
    message = (
        f"The arguments of {tool} are invalid, so nothing was done (the portal was not contacted): {description}. "
        "Types are strict: send numbers as JSON numbers, booleans as true/false, lists as JSON arrays."
    )
    structured = {
        "status": "error",
        **known,
        "message": message,
        "error": INVALID_ARGUMENTS,
        "error_description": description,
        "retryable": False,
        "httpStatus": None,
    }
    return CallToolResult(
        content=[TextContent(type="text", text=f"{INVALID_ARGUMENTS}: {message}")],
        structured_content=structured,
        is_error=True,
    )


class StrictArguments:
    """Server middleware: refuse a call to one of `tools` whose arguments fail the strict model of its signature.

    The models are derived on first use, off the start-up path.
    """

    def __init__(self, tools: Mapping[str, Callable[..., Any]]) -> None:
        self._tools = dict(tools)
        self._models: dict[str, type[BaseModel]] = {}

    def model(self, name: str) -> type[BaseModel]:
        """The strict model of tool `name`'s arguments."""
        if name not in self._models:
            self._models[name] = strict_model(self._tools[name])
        return self._models[name]

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        if ctx.method == "tools/call" and params.get("name") in self._tools:
            name = str(params["name"])
            model = self.model(name)
            arguments = params.get("arguments")
            try:
                model.model_validate(arguments if arguments is not None else {})
            except ValidationError as exc:
                return invalid_arguments(name, explain(exc, model))
        result = await call_next(ctx)
        if ctx.method == "tools/list" and isinstance(result, dict):
            for tool in result.get("tools", []):
                if isinstance(tool, dict) and tool.get("name") in self._tools:
                    tool.setdefault("inputSchema", {})["additionalProperties"] = False
        return result
