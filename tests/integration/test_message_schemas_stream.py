"""The published message schemas hold for what a real ``ecg-worker`` writes to the real
broker: every score, every anomaly alert and the headers of every dead letter validate; and
with ``validation.input_schema`` set to a site schema, a window that breaks it is a
``schema`` dead letter while the stream goes on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from referencing import Registry, Resource

from tests.builders import synthetic_windows
from tests.integration.test_worker_stream import Env, env  # noqa: F401 - fixture
from tests.integration.worker_helpers import inputs_committed
from tests.integration.worker_helpers import read_topic as read
from worker.core.message_schemas import (
    ANOMALY,
    DEAD_LETTER_HEADERS,
    SCHEMA_NAMES,
    SCORE,
    load_schema,
)

pytestmark = pytest.mark.integration

REGISTRY = Registry().with_resources(
    (load_schema(n)["$id"], Resource.from_contents(load_schema(n))) for n in SCHEMA_NAMES
)
SITE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["device", "values"],
    "properties": {"device": {"type": "string", "pattern": "^ward-[0-9]+$"}},
}


def problems(name: str, doc: object) -> list[str]:
    validator = jsonschema.Draft202012Validator(load_schema(name), registry=REGISTRY)
    return [e.message for e in validator.iter_errors(doc)]


def test_real_outputs_validate_and_site_schema_failures_are_dead_letters(
    env: Env,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    schema_path = tmp_path / "site.schema.json"
    schema_path.write_text(json.dumps(SITE_SCHEMA), encoding="utf-8")
    n = 200
    windows = synthetic_windows(n, seed=11)
    worker = env.worker(validation={"input_schema": str(schema_path)})
    worker.wait_ready()
    env.send(
        [
            orjson.dumps({"id": f"w-{i}", "device": f"ward-{i % 3}", "values": row.tolist()})
            for i, row in enumerate(windows)
        ]
    )
    malformed = [
        orjson.dumps({"id": "no-device", "values": windows[0].tolist()}),  # schema
        orjson.dumps({"id": "icu", "device": "icu-1", "values": windows[0].tolist()}),  # schema
        b'{"values": [1, 2',  # not_json: decode's own reason wins
        orjson.dumps({"id": "short", "device": "ward-1", "values": [0.1] * 10}),  # wrong_length
    ]
    env.send(malformed, key=b"bad")

    bootstrap = env.broker.bootstrap_servers
    # The raw JSON documents: the schemas judge what is on the wire.
    done = inputs_committed(bootstrap, env.group, env.topics.input)
    scores = json_docs(read(bootstrap, env.topics.scores, n, settled=done))
    flagged = [s for s in scores if s["anomaly"]]
    anomalies = json_docs(read(bootstrap, env.topics.anomalies, len(flagged), settled=done))
    dead = read(bootstrap, env.topics.dead_letter, len(malformed), settled=done)
    headers = [{k: v.decode("utf-8") for k, v in r.headers} for r in dead]

    assert len(scores) == n and 0 < len(flagged) < n
    assert len(anomalies) == len(flagged)
    assert [p for s in scores for p in problems(SCORE, s)] == []
    assert [p for a in anomalies for p in problems(ANOMALY, a)] == []
    assert [p for h in headers for p in problems(DEAD_LETTER_HEADERS, h)] == []
    assert sorted(h["dlq.reason"] for h in headers) == [
        "not_json",
        "schema",
        "schema",
        "wrong_length",
    ]
    assert {r.value for r in dead} == set(malformed)  # original bytes
    assert all("device" in h["dlq.detail"] for h in headers if h["dlq.reason"] == "schema")
    assert worker.terminate() == 0


def json_docs(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]
