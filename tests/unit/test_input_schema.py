"""The optional input-schema check: off by default, ``builtin`` or a site schema file; a
window that breaks the schema becomes a ``schema`` dead letter, never a crash."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from tests.fakes import FakeRecord
from tests.unit.test_loop import DLQ, IN, SCORES, Rig
from worker.core.artifact import EcgArtifact
from worker.core.codec import SCHEMA, Rejected, Window, decode
from worker.core.errors import ConfigError
from worker.service.config import ValidationConfig, WorkerConfig
from worker.service.delivery import AtLeastOnceDelivery
from worker.service.input_schema import InputSchemaCheck
from worker.service.loop import WorkerLoop

L = 140
SITE_SCHEMA = {
    "type": "object",
    "required": ["device", "values"],
    "properties": {"device": {"type": "string", "pattern": "^ward-[0-9]+$"}},
}


def decoded(doc: object) -> Window:
    item = decode(orjson.dumps(doc), b"k", IN, 0, 5, 1, L, 65536)
    assert isinstance(item, Window)
    return item


def site_schema(tmp_path: Path) -> str:
    path = tmp_path / "site.schema.json"
    path.write_text(json.dumps(SITE_SCHEMA), encoding="utf-8")
    return str(path)


def test_off_by_default() -> None:
    assert WorkerConfig().validation.input_schema == "none"
    assert InputSchemaCheck.from_setting("none") is None


def test_builtin_schema_passes_every_window_the_worker_decodes() -> None:
    check = InputSchemaCheck.from_setting("builtin")
    assert check is not None
    for doc in (
        [0.1] * L,
        {"id": 7, "values": [1] * L, "label": 1},
        {"id": None, "values": [0] * L},
    ):
        w = decoded(doc)
        assert check.check(w) is w


def test_builtin_schema_rejects_nan_in_a_passed_through_field() -> None:
    # decode's lenient fallback accepts it (values are finite), strict JSON does not.
    raw = b'{"values": [' + b", ".join([b"0.1"] * L) + b'], "gain": NaN}'
    w = decode(raw, None, IN, 0, 1, 1, L, 65536)
    assert isinstance(w, Window)
    check = InputSchemaCheck.from_setting("builtin")
    assert check is not None
    result = check.check(w)
    assert isinstance(result, Rejected) and result.reason == SCHEMA
    assert result.value == raw


def test_site_schema_dead_letters_what_it_forbids(tmp_path: Path) -> None:
    check = InputSchemaCheck.from_setting(site_schema(tmp_path))
    assert check is not None
    good = decoded({"device": "ward-3", "values": [0.1] * L})
    bad = decoded({"device": "icu", "values": [0.1] * L})
    missing = decoded({"values": [0.1] * L})

    assert check.check(good) is good
    for w in (bad, missing):
        result = check.check(w)
        assert isinstance(result, Rejected)
        assert result.reason == SCHEMA
        assert "device" in result.detail
        assert (result.topic, result.partition, result.offset, result.key) == (IN, 0, 5, b"k")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "is not JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"type": 12}', "not a usable JSON Schema"),
    ],
)
def test_bad_schema_file_is_a_config_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        InputSchemaCheck.from_setting(str(path))


def test_env_override_turns_it_on(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text("{}", encoding="utf-8")
    config = WorkerConfig.from_yaml(tmp_path / "w.yaml", env={"ECG_INPUT_SCHEMA": "builtin"})
    assert config.validation.input_schema == "builtin"


def test_loop_dead_letters_schema_failures_and_scores_the_rest(
    ecg_artifact: EcgArtifact, tmp_path: Path
) -> None:
    rig = Rig(ecg_artifact, max_batch_size=4)
    config = replace(rig.config, validation=ValidationConfig(site_schema(tmp_path)))
    rig.loop = WorkerLoop(
        config,
        rig.consumer,
        AtLeastOnceDelivery(rig.producer, rig.consumer, 5.0),
        rig.scorer,
        rig.metrics,
        rig.tracker,
        rig.health,
        rig.drift,
        clock=rig.clock,
        wall_ms=lambda: rig.wall[0],
    )
    docs = [
        {"id": "a", "device": "ward-1", "values": [0.5] * L},
        {"id": "b", "values": [0.5] * L},
        {"id": "c", "device": "ward-2", "values": [0.5] * L},
        b"not json",
    ]
    values = [d if isinstance(d, bytes) else orjson.dumps(d) for d in docs]
    rig.consumer.feed([FakeRecord(IN, 0, i, 1, b"dev", v) for i, v in enumerate(values)])
    rig.loop.step()

    scored = sorted(orjson.loads(s.value)["id"] for s in rig.producer.by_topic(SCORES))
    reasons = {dict(d.headers)["dlq.source.offset"]: dict(d.headers)["dlq.reason"]
               for d in rig.producer.by_topic(DLQ)}  # fmt: skip
    assert scored == ["a", "c"]
    assert reasons == {b"1": b"schema", b"3": b"not_json"}  # decode's reason wins
    assert rig.committed(0) == 4
    assert rig.metric("ecg_windows_rejected_total", {"reason": "schema"}) == 1
