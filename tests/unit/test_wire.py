"""The topic defaults and the window length are one definition everyone starts from."""

from __future__ import annotations

import argparse
from pathlib import Path

import clients.alerts
import clients.replay
from clients.demo import Demo
from worker.core import wire
from worker.service.config import TopicsConfig, WorkerConfig

REPO = Path(__file__).resolve().parents[2]


def test_worker_and_tools_default_to_the_same_topics() -> None:
    topics = TopicsConfig()
    assert dict(wire.DEFAULT_TOPICS) == {
        "input": topics.input,
        "scores": topics.scores,
        "anomalies": topics.anomalies,
        "dead_letter": topics.dead_letter,
    }
    assert clients.replay.build_parser().parse_args([]).topic == topics.input
    assert clients.alerts.build_parser().parse_args([]).topic == topics.anomalies


def test_deploy_config_uses_the_default_topic_names() -> None:
    config = WorkerConfig.from_yaml(REPO / "deploy" / "worker.yaml", env={})
    assert config.topics.names() == tuple(wire.DEFAULT_TOPICS.values())


def test_the_demo_points_the_worker_at_its_run_topics_through_the_worker_own_overrides(
    tmp_path: Path,
) -> None:
    demo = Demo(argparse.Namespace(), run_id="demo-x", bootstrap="127.0.0.1:1")
    demo.topics = {role: f"{name}.demo-x" for role, name in wire.DEFAULT_TOPICS.items()}
    env = demo.worker_env(tmp_path / "artifact", 9999)
    config = WorkerConfig.from_yaml(REPO / "deploy" / "worker.yaml", env=env)
    assert config.topics.names() == tuple(demo.topics.values())
    assert config.kafka.bootstrap_servers == ("127.0.0.1:1",)
