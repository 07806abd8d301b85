"""Optional check of every decoded input window against a JSON Schema (reason ``schema``).

Off by default. ``validation.input_schema: builtin`` checks inputs against the published
``input-window`` schema; a path to a stricter site schema (for example one that requires a
``device`` field) checks against that instead. The check runs after ``codec.decode`` has
accepted a record, so the specific reasons (``wrong_length``, ``non_numeric``, ...) win and
``schema`` is left for what only the schema forbids. It is compiled once with fastjsonschema;
``benchmarks/input_schema.py`` measures its cost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from worker.core.codec import SCHEMA, Rejected, Window, reject_window
from worker.core.errors import ConfigError
from worker.core.message_schemas import INPUT_WINDOW, load_schema

OFF = "none"
BUILTIN = "builtin"


class InputSchemaCheck:
    """Validates the original bytes of decoded windows against one compiled schema."""

    def __init__(self, schema: dict[str, Any], source: str) -> None:
        try:
            self._validate: Callable[[Any], Any] = fastjsonschema.compile(schema)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            raise ConfigError(f"{source}: not a usable JSON Schema ({exc})") from exc
        self.source = source

    @classmethod
    def from_setting(cls, setting: str) -> InputSchemaCheck | None:
        """``none`` -> no check; ``builtin`` -> the published schema; else a schema file."""
        if setting == OFF:
            return None
        if setting == BUILTIN:
            return cls(load_schema(INPUT_WINDOW), "builtin input-window schema")
        path = Path(setting)
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"validation.input_schema: cannot read {path} ({exc.strerror or exc})"
            ) from exc
        except ValueError as exc:
            raise ConfigError(f"validation.input_schema: {path} is not JSON ({exc})") from exc
        if not isinstance(schema, dict):
            raise ConfigError(f"validation.input_schema: {path} must hold a JSON object")
        return cls(schema, str(path))

    def check(self, window: Window) -> Window | Rejected:
        """The window itself, or a ``schema`` dead letter naming the first violation."""
        try:
            doc = orjson.loads(window.raw)
        except orjson.JSONDecodeError:
            # decode accepted it through the lenient parser (NaN/Infinity in a passed-through
            # field): not JSON that any schema can accept.
            return reject_window(window, SCHEMA, "value is not strict JSON (NaN or Infinity)")
        try:
            self._validate(doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            return reject_window(window, SCHEMA, f"input schema: {exc.message}"[:500])
        except RecursionError:
            return reject_window(window, SCHEMA, "input schema: value nested too deeply")
        return window
