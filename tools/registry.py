"""The tools a model may call: each a name, a description, a pydantic input and output model, and a function.

A tool is what the OpenAI planner offers the model (`openai.pydantic_function_tool(tool.input)`) and what it runs
when the model calls it; the same function is what an agent's own nodes call. The input and output JSON schemas
are what the model sees, so they are snapshot-tested (`tests/tools/test_tool_schemas.py`): a change in them fails
CI until the snapshot is rewritten on purpose.

Tools live in the modules listed in `TOOL_MODULES`; each exposes `TOOLS: list[Tool]`.

Public names: `Tool`, `TOOL_MODULES`, `all_tools`, `get_tool`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from pipewarden.errors import ModelRetry, UnknownNameError

TOOL_MODULES: tuple[str, ...] = (
    "pipewarden.tools.schema_match",
    "pipewarden.tools.lineage",
    "pipewarden.tools.cost",
    "pipewarden.tools.quality",
    "pipewarden.tools.drift",
    "pipewarden.tools.model_registry",
    "pipewarden.tools.challenger",
)
"""Modules exposing `TOOLS: list[Tool]`. Add yours here."""


@dataclass(frozen=True)
class Tool:
    """One typed tool. `fn` takes an instance of `input` and returns an instance of `output`."""

    name: str
    description: str
    input: type[BaseModel]
    output: type[BaseModel]
    fn: Callable[[Any], BaseModel]

    def call(self, args: BaseModel | dict[str, Any] | str) -> BaseModel:
        """Validate `args` (a model, a dict or JSON text), run the tool, and check it returned its output type.

        Arguments that do not validate raise `ModelRetry` naming the fields, so a model's bad call is answered
        with what to fix rather than crashing the agent.
        """
        try:
            if isinstance(args, str):
                parsed = self.input.model_validate_json(args or "{}")
            elif isinstance(args, BaseModel):
                parsed = self.input.model_validate(args.model_dump())
            else:
                parsed = self.input.model_validate(args)
        except ValidationError as exc:
            fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:3])
            raise ModelRetry(f"the arguments of tool {self.name!r} are invalid: {fields}",
                             hint=f"call {self.name} with arguments matching its schema") from exc
        out = self.fn(parsed)
        if not isinstance(out, self.output):
            raise TypeError(f"tool {self.name!r} returned {type(out).__name__}, not {self.output.__name__}")
        return out

    def schema(self) -> dict[str, Any]:
        """What the model sees of this tool (and what the snapshot holds)."""
        return {
            "name": self.name,
            "description": self.description,
            "input": self.input.model_json_schema(),
            "output": self.output.model_json_schema(),
        }

    def schema_json(self) -> str:
        return json.dumps(self.schema(), indent=2, sort_keys=True) + "\n"


def all_tools() -> dict[str, Tool]:
    """Every registered tool by name; a name registered twice is a programming error."""
    found: dict[str, Tool] = {}
    for module in TOOL_MODULES:
        for tool in getattr(importlib.import_module(module), "TOOLS", []):
            if tool.name in found:
                raise ValueError(f"tool {tool.name!r} is registered twice (second time in {module})")
            found[tool.name] = tool
    return found


def get_tool(name: str) -> Tool:
    tools = all_tools()
    if name not in tools:
        raise UnknownNameError("tool", name, sorted(tools))
    return tools[name]
