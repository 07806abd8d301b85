"""The published message schemas (worker/core/schemas/) describe what the worker really
writes and what the docs show: a consumer in another language can code against them."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from referencing import Registry, Resource

from worker.core import codec
from worker.core.codec import Rejected, Window, decode, encode_score
from worker.core.message_schemas import (
    ANOMALY,
    DEAD_LETTER_HEADERS,
    INPUT_WINDOW,
    SCHEMA_NAMES,
    SCORE,
    load_schema,
)
from worker.core.scorer import Segment

ROOT = Path(__file__).resolve().parents[2]
L = 140


def _registry() -> Registry:
    resources = [
        (load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in SCHEMA_NAMES
    ]
    return Registry().with_resources(resources)


REGISTRY = _registry()


def validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(name), registry=REGISTRY)


def errors(name: str, doc: Any) -> list[str]:
    return [e.message for e in validator(name).iter_errors(doc)]


def window(raw: bytes) -> Window:
    result = decode(raw, b"dev-1", "ecg.windows", 3, 42, 1_700_000_000_000, L, 65536)
    assert isinstance(result, Window)
    return result


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    for name in SCHEMA_NAMES:
        jsonschema.Draft202012Validator.check_schema(load_schema(name))


def test_schema_version_and_reason_codes_match_the_writer() -> None:
    assert load_schema(SCORE)["properties"]["schema_version"] == {"const": codec.SCHEMA_VERSION}
    headers = load_schema(DEAD_LETTER_HEADERS)["properties"]
    assert headers["dlq.schema_version"] == {"const": str(codec.SCHEMA_VERSION)}
    assert headers["dlq.reason"]["enum"] == list(codec.REASONS)


def test_real_scores_and_anomalies_validate() -> None:
    w = window(orjson.dumps({"id": "beat-17", "values": [0.5] * L, "label": 1}))
    score = orjson.loads(encode_score(w, 0.0213, False, 0.0321, "3f1c2a9b", 1_700_000_000_051))
    segments = [Segment(88, 104, 0.112), Segment(3, 9, 0.081)]
    alert = orjson.loads(encode_score(w, 0.5, True, 0.0321, "3f1c2a9b", 1, segments))

    assert errors(SCORE, score) == []
    assert errors(SCORE, alert) == []
    assert errors(ANOMALY, alert) == []
    assert errors(ANOMALY, score)  # no segments, anomaly false: not an alert


def test_a_consumer_notices_a_broken_score() -> None:
    w = window(orjson.dumps([0.5] * L))
    score = orjson.loads(encode_score(w, 0.1, False, 0.2, "v", 1))

    assert errors(SCORE, {**score, "schema_version": 2})
    assert errors(SCORE, {k: v for k, v in score.items() if k != "model_version"})
    assert errors(SCORE, {**score, "error": "0.1"})
    assert errors(SCORE, {**score, "extra": 1})


@pytest.mark.parametrize("reason", codec.REASONS)
def test_dead_letter_headers_validate_for_every_reason(reason: str) -> None:
    rejected = Rejected(reason, "detail é", b"x", None, "ecg.windows", 0, 7, -1)
    headers = {k: v.decode("utf-8") for k, v in codec.dead_letter_headers(rejected)}

    assert errors(DEAD_LETTER_HEADERS, headers) == []
    assert errors(DEAD_LETTER_HEADERS, {**headers, "dlq.reason": "other"})


def test_cut_and_null_dead_letters_validate() -> None:
    for value, key in ((None, None), (b"v" * 100, b"k" * 100), (b"v" * 100, None)):
        rejected = Rejected("oversized", "detail", value, key, "ecg.windows", 0, 7, -1)
        dead = codec.encode_dead_letter(rejected, 10)
        headers = {k: v.decode("utf-8") for k, v in dead.headers}
        assert errors(DEAD_LETTER_HEADERS, headers) == [], headers


ACCEPTED = [
    [0.1] * L,
    {"values": [1] * L},
    {"id": "beat-1", "values": [0.1] * L, "label": 1, "device": "ward-3"},
    {"id": 17, "values": [0.1] * L},
    {"id": None, "values": [0.1] * L},
]
REJECTED = [
    "text",
    17,
    {"id": "x"},
    {"id": "", "values": [0.1] * L},
    {"id": 1.5, "values": [0.1] * L},
    {"values": "1,2"},
    {"values": [True] * L},
    [None] * L,
]


@pytest.mark.parametrize("doc", ACCEPTED)
def test_input_schema_accepts_what_the_worker_scores(doc: Any) -> None:
    assert errors(INPUT_WINDOW, doc) == []
    assert isinstance(decode(orjson.dumps(doc), None, "t", 0, 0, 0, L, 65536), Window)


@pytest.mark.parametrize("doc", REJECTED)
def test_input_schema_rejects_what_the_worker_dead_letters(doc: Any) -> None:
    assert errors(INPUT_WINDOW, doc)
    assert isinstance(decode(orjson.dumps(doc), None, "t", 0, 0, 0, L, 65536), Rejected)


# --------------------------------------------------------------------------- documentation

DOC_FILES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))]
ELIDED = re.compile(r"\.\.\. ?(\d+) numbers ?\.\.\.")


def _json_blocks() -> list[tuple[str, str]]:
    found = []
    for name in DOC_FILES:
        text = (ROOT / name).read_text(encoding="utf-8")
        for i, block in enumerate(re.findall(r"```json\n(.*?)```", text, flags=re.S)):
            found.append((f"{name}#{i + 1}", block))
    return found


def _expand(block: str) -> str:
    """Docs shorten 140 samples as ``[a, b, ... 140 numbers ...]``: rebuild the full array."""

    def array(match: re.Match[str]) -> str:
        inner = match.group(1)
        count = int(ELIDED.search(inner).group(1))  # type: ignore[union-attr]
        shown = [x for x in ELIDED.sub("", inner).split(",") if x.strip()]
        return "[" + ", ".join([*shown, *["0.0"] * (count - len(shown))]) + "]"

    return re.sub(r"\[([^\[\]]*" + ELIDED.pattern + r"[^\[\]]*)\]", array, block)


def _schema_for(doc: Any) -> str | None:
    if isinstance(doc, list) or (isinstance(doc, dict) and "values" in doc):
        return INPUT_WINDOW
    if isinstance(doc, dict) and "segments" in doc:
        return ANOMALY
    if isinstance(doc, dict) and "scored_at_ms" in doc:
        return SCORE
    if isinstance(doc, dict) and "dlq.reason" in doc:
        return DEAD_LETTER_HEADERS
    return None


MESSAGE_BLOCKS = [
    (where, block)
    for where, block in _json_blocks()
    if re.search(r'"values"|"scored_at_ms"|"segments"|"dlq\.reason"|^\s*\[', block)
]


def test_the_docs_show_message_examples() -> None:
    assert len(MESSAGE_BLOCKS) >= 5, MESSAGE_BLOCKS


@pytest.mark.parametrize(("where", "block"), MESSAGE_BLOCKS, ids=[w for w, _ in MESSAGE_BLOCKS])
def test_every_message_example_in_the_docs_validates(where: str, block: str) -> None:
    text = _expand(block)
    if "..." in text:
        # A fragment ("..." for fields shown above it): only the fields it shows are checked.
        text = re.sub(r",\s*\.\.\.\s*,", ",", text)
        doc = json.loads(text)
        name = _schema_for(doc)
        assert name is not None, f"{where}: which message is this?"
        kinds = [e.validator for e in validator(name).iter_errors(doc)]
        assert set(kinds) <= {"required", "allOf"}, f"{where}: {errors(name, doc)}"
        return
    doc = json.loads(text)
    name = _schema_for(doc)
    assert name is not None, f"{where}: which message is this?"
    assert errors(name, doc) == [], where


def test_every_schema_file_is_shipped_as_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["worker.core"]
    package = ROOT / "worker" / "core"
    shipped = {p for pattern in globs for p in package.glob(pattern)}
    files = set((package / "schemas").iterdir())

    assert files == shipped
    assert {f.name for f in files} == {f"{name}.schema.json" for name in SCHEMA_NAMES}
