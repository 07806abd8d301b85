"""Readiness does not depend on owning a partition (issue 10, defect 7).

Two workers in one group on a one-partition topic: before the fix the second one never
became ready, so the surge pod of a rolling update (or any spare replica) stalled the
rollout. Now both are ready, one owns the partition and the other is a standby that takes
over when the first stops.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import synthetic_windows
from tests.integration.services import KafkaBroker, TopicNames
from tests.integration.test_worker_stream import Env, score_docs
from tests.integration.worker_helpers import read_topic as read

pytestmark = pytest.mark.integration


@pytest.fixture
def env(kafka_broker: KafkaBroker, topic_names: TopicNames, tmp_path: Path) -> Iterator[Env]:
    environment = Env(kafka_broker, topic_names, tmp_path)
    try:
        yield environment
    finally:
        environment.close()


def test_a_worker_without_a_partition_is_ready_and_takes_over(env: Env) -> None:
    first = env.worker()
    first.wait_ready()
    second = env.worker()
    second.wait_ready()  # before the fix: "no input partitions assigned" (503) for good
    answers = sorted(w.get("/readyz")[1] for w in (first, second))
    deadline = time.monotonic() + 30
    while answers != ["ok (1 partitions)\n", "ok (no partitions assigned: standby)\n"]:
        assert time.monotonic() < deadline, answers
        time.sleep(0.2)
        answers = sorted(w.get("/readyz")[1] for w in (first, second))
    owner, standby = (
        (first, second) if "1 partitions" in first.get("/readyz")[1] else (second, first)
    )

    assert owner.terminate() == 0
    env.send_windows(["after-handover"], synthetic_windows(1, seed=3))
    scores = score_docs(read(env.broker.bootstrap_servers, env.topics.scores, 1, timeout_s=60))
    assert [str(s.id) for s in scores] == ["after-handover"]
    assert standby.get("/readyz") == (200, "ok (1 partitions)\n")
    assert standby.terminate() == 0
