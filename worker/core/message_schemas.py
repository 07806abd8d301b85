"""The published message contracts: JSON Schema files shipped inside the package.

``worker/core/schemas/`` holds one JSON Schema (draft 2020-12) per message: the input
window, the score, the anomaly alert and the dead-letter headers. They are package data, so
an installed worker (and any consumer that installs this package) can read them with
``load_schema``; other languages read the same files from the repository. The writer of
each message is ``worker.core.codec``; ``codec.SCHEMA_VERSION`` is the version they state.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

INPUT_WINDOW = "input-window"
SCORE = "score"
ANOMALY = "anomaly"
DEAD_LETTER_HEADERS = "dead-letter-headers"
SCHEMA_NAMES = (INPUT_WINDOW, SCORE, ANOMALY, DEAD_LETTER_HEADERS)


def schema_file_name(name: str) -> str:
    """The file name of schema ``name`` inside ``worker/core/schemas/``."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"no message schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return f"{name}.schema.json"


def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema ``name`` (one of ``SCHEMA_NAMES``)."""
    text = (
        resources.files("worker.core")
        .joinpath("schemas", schema_file_name(name))
        .read_text(encoding="utf-8")
    )
    schema: dict[str, Any] = json.loads(text)
    return schema
