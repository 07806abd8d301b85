"""``ecg-demo``: the main job end to end on one machine.

1. start the local Kafka broker (unless one already answers on the port),
2. train the artifact if there is none (``ecg-train ecg --out DIR``),
3. create this run's topics (names end in the run id, so a re-run never reads old records),
4. start ``ecg-worker`` on them and wait until it is ready,
5. replay the 1000-window ECG5000 test split (labels ride along in each record),
6. read every score back (bounded by ``--timeout-s``), plus the alerts and dead letters,
   then scrape the worker's ``/metrics`` for its window counters,
7. stop the worker (SIGTERM; it must exit 0), print the summary, delete the run's topics
   and stop the broker if this run started it.

Exit codes (``worker.cli_support.runner``): 0 it all worked; 3 the run finished but something
is wrong (a window not scored, a dead letter, metrics that differ from the artifact's, worker
counters that differ from the stream, an unclean worker exit); 1 Kafka failed (the broker did
not start or stopped answering); 2 another known error before that (artifact, training, worker
start-up); 130 Ctrl-C or SIGTERM. Whatever happens, what this run started is stopped again.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from clients.kafka_clients import load_kafka_config, make_consumer, make_producer
from clients.local_broker import REPO_ROOT, LocalBroker
from clients.replay import Pacer, ReplayWindow, replay, split_windows
from clients.stream_summary import (
    StreamTally,
    format_summary,
    metric_differences,
    offline_check,
    problems,
    summarise,
)
from clients.terminal import printable
from clients.worker_counters import (
    WorkerCounters,
    counter_problems,
    format_counters,
    parse_counters,
)
from clients.worker_process import WorkerProcess, WorkerProcessError, tool_command
from worker.cli_support.argtypes import positive_float, positive_int
from worker.cli_support.runner import ExitCode, run_cli
from worker.core.artifact import ARTIFACT_FILE, EcgArtifact, load_ecg_artifact
from worker.core.errors import BrokerError, ConfigError, DataError
from worker.core.scorer import Scorer
from worker.core.wire import DEFAULT_TOPICS
from worker.service.config import ENV_OVERRIDES, KafkaConfig

DEFAULT_ARTIFACT = "artifacts/ecg"
DEFAULT_WORKER_CONFIG = REPO_ROOT / "deploy" / "worker.yaml"
DEFAULT_RUN_DIR = REPO_ROOT / ".local" / "demo"
TOPIC_ROLES = tuple(DEFAULT_TOPICS)
BASE_TOPICS = DEFAULT_TOPICS
# Topic role -> the worker's environment override for it (ECG_INPUT_TOPIC, ...).
WORKER_ENV_FOR_TOPIC = {
    item.path[1]: item.name
    for item in ENV_OVERRIDES
    if item.path[0] == "topics" and item.path[1] in DEFAULT_TOPICS
}
# After the last score, how long to wait for alerts still in flight on the anomalies topic.
ALERT_GRACE_S = 5.0
# The worker counts a batch after its commit, a moment after the batch's scores are readable:
# how long to re-scrape /metrics until it has counted every window sent.
METRICS_SETTLE_S = 5.0


def say(message: str) -> None:
    """A progress line on stderr (stdout carries only the summary)."""
    print(f"ecg-demo: {printable(message)}", file=sys.stderr, flush=True)


def new_run_id() -> str:
    """A short, sortable, unique id for this run's topics, group and logs."""
    return f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Demo:
    """One run; remembers what it started so that ``cleanup`` stops exactly that."""

    args: argparse.Namespace
    run_id: str = field(default_factory=new_run_id)
    broker: LocalBroker | None = None
    worker: WorkerProcess | None = None
    topics: dict[str, str] = field(default_factory=dict)
    topics_created: bool = False
    bootstrap: str = ""
    # Security settings for the demo's own clients: the worker's config and ECG_* variables.
    kafka: KafkaConfig = field(default_factory=KafkaConfig)

    def run(self) -> int:
        """Everything between starting the broker and printing the summary."""
        args = self.args
        self.topics = {role: f"{BASE_TOPICS[role]}.{self.run_id}" for role in TOPIC_ROLES}
        run_dir = Path(args.run_dir) / self.run_id
        say(f"run {self.run_id} (logs in {run_dir})")
        self.kafka = load_kafka_config(args.worker_config)

        if args.bootstrap_servers:
            self.bootstrap = args.bootstrap_servers
            say(f"using the broker at {self.bootstrap}")
        else:
            self.broker = LocalBroker(port=args.kafka_port, data_dir=args.kafka_data_dir)
            say(self.broker.ensure_running())
            self.bootstrap = self.broker.bootstrap_servers

        artifact = self.ensure_artifact(Path(args.artifact))
        say(
            f"artifact {artifact.model_version} ({artifact.profile}, threshold "
            f"{artifact.threshold:.6f} by {artifact.threshold_rule}) in {artifact.path}"
        )
        windows, comparable_note = self.test_windows(artifact)

        self.create_topics(args.partitions)
        say(f"topics: {', '.join(self.topics.values())} ({args.partitions} partitions)")

        metrics_port = free_port()
        self.worker = WorkerProcess(
            config=Path(args.worker_config),
            env=self.worker_env(artifact.path, metrics_port),
            metrics_port=metrics_port,
            log_path=run_dir / "worker.log",
        )
        self.worker.start()
        ready_s = self.worker.wait_ready(args.startup_timeout_s)
        say(
            f"ecg-worker (pid {self.worker.pid}) ready after {ready_s:.1f} s, "
            f"metrics on :{metrics_port}"
        )

        reader = self.open_reader()
        try:
            tally = StreamTally(expected_ids=frozenset(w.id for w in windows))
            first_send_ms, sent = self.send(windows)
            self.read_back(reader, tally, args.timeout_s)
        finally:
            reader.close()
        scraped = self.scrape_counters(sent)

        code = self.worker.stop()
        self.worker = None
        say(f"ecg-worker stopped with exit code {code}")

        summary = summarise(tally, sent=sent, first_send_ms=first_send_ms)
        recorded = (artifact.metadata.get("metrics") or {}).get("test")
        print(
            format_summary(
                summary,
                run_id=self.run_id,
                topics=self.topics,
                artifact=artifact.metadata,
                recorded_metrics=recorded,
                comparable_note=comparable_note,
            ),
            flush=True,
        )
        offline = offline_check({w.id: w.values for w in windows}, tally.scores, Scorer(artifact))
        print(offline.line())
        failures = problems(summary, artifact.model_version)
        failures += [f"offline check: {m}" for m in offline.problems()[:5]]
        if isinstance(scraped, str):
            print(f"metrics        not read: {scraped}")
            failures.append(f"worker metrics: {scraped}")
        else:
            differences = counter_problems(
                scraped,
                sent=sent,
                flagged=summary.flagged,
                dead_letters=summary.dead_letter_count,
            )
            print(format_counters(scraped, differences))
            failures += [f"worker metrics: {d}" for d in differences]
        if comparable_note is None:
            check = metric_differences(
                summary,
                recorded,
                threshold=artifact.threshold,
                window_length=artifact.window_length,
            )
            failures += [f"metric {d}" for d in check.differences]
        if code != 0:
            failures.append(f"ecg-worker exited with code {code} after SIGTERM (expected 0)")
        for failure in failures:
            print(f"ecg-demo: FAILED: {failure}", file=sys.stderr)
        return ExitCode.INCOMPLETE if failures else ExitCode.OK

    # ------------------------------------------------------------------ steps

    def ensure_artifact(self, path: Path) -> EcgArtifact:
        """Load the artifact, training it first when there is none."""
        if not (path / ARTIFACT_FILE).is_file():
            command = [
                *tool_command("ecg-train"),
                "ecg",
                "--out",
                str(path),
                *shlex.split(self.args.train_args),
            ]
            say(f"no artifact in {path}; training one: {shlex.join(command)}")
            started = time.monotonic()
            result = subprocess.run(command, check=False, stdout=sys.stderr, stderr=sys.stderr)
            if result.returncode != 0:
                raise WorkerProcessError(f"training failed (ecg-train exited {result.returncode})")
            say(f"trained in {time.monotonic() - started:.0f} s")
        return load_ecg_artifact(path)

    def test_windows(self, artifact: EcgArtifact) -> tuple[list[ReplayWindow], str | None]:
        """The ECG5000 test split, and a note when the artifact was trained on other data."""
        from trainer.ecg.data import load_ecg, tutorial_split

        data = load_ecg()
        windows = split_windows(tutorial_split(data))
        trained_on = (artifact.metadata.get("data") or {}).get("sha256")
        if trained_on != data.sha256:
            return windows, (
                "the artifact was trained on other data than ECG5000, so its recorded test "
                "metrics are not comparable with this stream"
            )
        return windows, None

    def create_topics(self, partitions: int) -> None:
        """Create this run's four topics (one replica: a single local broker)."""
        admin = self._admin()
        try:
            admin.create_topics(
                [NewTopic(name, partitions, 1) for name in self.topics.values()],
                timeout_ms=30_000,
                wait_for_metadata=True,
            )
            self.topics_created = True
        except KafkaError as exc:
            raise BrokerError(f"cannot create the demo topics on {self.bootstrap}: {exc}") from exc
        finally:
            admin.close()

    def delete_topics(self) -> None:
        """Remove this run's topics (``--keep-topics`` keeps them for ``ecg-alerts``)."""
        if not self.topics_created:
            return
        try:
            admin = self._admin()
            try:
                admin.delete_topics(list(self.topics.values()), timeout_ms=30_000)
            finally:
                admin.close()
            self.topics_created = False
        except (KafkaError, BrokerError) as exc:
            say(f"warning: could not delete this run's topics ({exc})")

    def worker_env(self, artifact_path: Path, metrics_port: int) -> dict[str, str]:
        """The worker's ``ECG_*`` overrides: this broker, this run's topics and group."""
        env = {
            "ECG_BOOTSTRAP_SERVERS": self.bootstrap,
            "ECG_GROUP_ID": f"ecg-worker-{self.run_id}",
            "ECG_CREATE_TOPICS": "false",
            "ECG_ARTIFACT": str(artifact_path.resolve()),
            "ECG_METRICS_HOST": "127.0.0.1",
            "ECG_METRICS_PORT": str(metrics_port),
        }
        for role, name in self.topics.items():
            env[WORKER_ENV_FOR_TOPIC[role]] = name
        return env

    def open_reader(self) -> Any:
        """One group-less consumer on every partition of the three output topics, at offset 0."""
        consumer = make_consumer(self.bootstrap, **self.kafka.consumer_settings())
        partitions = [
            TopicPartition(self.topics[role], p)
            for role in ("scores", "anomalies", "dead_letter")
            for p in range(self.args.partitions)
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return consumer

    def send(self, windows: list[ReplayWindow]) -> tuple[int, int]:
        """Replay the windows; returns (first send time in ms, windows sent)."""
        from tqdm import tqdm

        say(f"replaying {len(windows)} windows to {self.topics['input']}")
        producer = make_producer(self.bootstrap, **self.kafka.producer_settings())
        try:
            with tqdm(total=len(windows), unit="win", file=sys.stderr, disable=None) as bar:
                report = replay(
                    producer,
                    self.topics["input"],
                    windows,
                    devices=self.args.devices,
                    pacer=Pacer(self.args.rate),
                    on_sent=bar.update,
                )
        finally:
            producer.close(timeout=5)
        say(f"sent {report.sent} windows in {report.duration_s:.2f} s, all acknowledged")
        return report.first_send_ms, report.sent

    def read_back(self, reader: Any, tally: StreamTally, timeout_s: float) -> None:
        """Poll the output topics until every id is scored (or the timeout passes)."""
        assert self.worker is not None
        deadline = time.monotonic() + timeout_s
        alert_deadline: float | None = None
        while time.monotonic() < deadline:
            for tp, records in reader.poll(timeout_ms=200).items():
                for record in records:
                    where = f"{record.topic}[{record.partition}]@{record.offset}"
                    if tp.topic == self.topics["scores"]:
                        tally.add_score(record.value, where)
                    elif tp.topic == self.topics["anomalies"]:
                        tally.add_anomaly(record.value, where)
                    else:
                        tally.add_dead_letter(record.headers or [])
            if tally.complete:
                # Alerts are produced with the scores of the same batch; give stragglers a moment.
                alert_deadline = alert_deadline or time.monotonic() + ALERT_GRACE_S
                if tally.anomaly_records >= tally.flagged or time.monotonic() > alert_deadline:
                    break
            self.worker.check_alive()
        if tally.complete:
            say(f"read back all {len(tally.scores)} scores")
        else:
            say(
                f"timed out after {timeout_s:.0f} s with {len(tally.scores)} of "
                f"{len(tally.expected_ids)} scores"
            )

    def scrape_counters(self, sent: int) -> WorkerCounters | str:
        """The worker's window counters once it has counted all ``sent`` windows (or after
        ``METRICS_SETTLE_S``), or a sentence saying why they could not be read."""
        assert self.worker is not None
        source = f"http://127.0.0.1:{self.worker.metrics_port}/metrics"
        deadline = time.monotonic() + METRICS_SETTLE_S
        while True:
            try:
                scraped: WorkerCounters | str = parse_counters(self.worker.scrape_metrics(), source)
            except (WorkerProcessError, DataError) as exc:
                scraped = str(exc)
            settled = isinstance(scraped, WorkerCounters) and scraped.consumed >= sent
            if settled or time.monotonic() >= deadline:
                return scraped
            time.sleep(0.1)

    def cleanup(self) -> None:
        """Stop the worker and the broker if this run started them; delete the run's topics."""
        if self.worker is not None:
            try:
                code = self.worker.stop()
                say(f"ecg-worker stopped (exit code {code})")
            except WorkerProcessError as exc:
                say(str(exc))
            self.worker = None
        if not self.args.keep_topics:
            self.delete_topics()
        elif self.topics_created:
            say(f"kept topics {', '.join(self.topics.values())}")
        if self.broker is not None and self.broker.started_here:
            say(f"stopping the local broker this run started on {self.broker.bootstrap_servers}")
            self.broker.stop_if_started()

    def _admin(self) -> KafkaAdminClient:
        try:
            settings = {
                k: v for k, v in self.kafka.client.items() if k in KafkaAdminClient.DEFAULT_CONFIG
            }
            return KafkaAdminClient(
                **settings,
                bootstrap_servers=self.bootstrap,
                bootstrap_timeout_ms=10_000,
                client_id=f"ecg-demo-{self.run_id}",
            )
        except KafkaError as exc:
            raise BrokerError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc


# --------------------------------------------------------------------------- CLI


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65534:
        raise argparse.ArgumentTypeError(f"must be a port number 1..65534, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The ``ecg-demo`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="ecg-demo",
        description="Run the streaming ECG scorer end to end on this machine and print a summary.",
    )
    parser.add_argument(
        "--artifact",
        default=DEFAULT_ARTIFACT,
        metavar="DIR",
        help="model artifact; trained here when DIR has none (default: %(default)s)",
    )
    parser.add_argument(
        "--train-args",
        default="",
        metavar="ARGS",
        help="extra options for 'ecg-train ecg' when training, e.g. "
        "'--profile tutorial --epochs 5 --no-report' (default: none)",
    )
    parser.add_argument(
        "--kafka-port",
        type=_port,
        default=int(os.environ.get("KAFKA_PORT") or 9092),
        help="port of the local broker, started if not running (default: $KAFKA_PORT or 9092)",
    )
    parser.add_argument(
        "--kafka-data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="data directory of a broker started here (default: .local/kafka/<port>)",
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help="use this running broker instead of the local one (nothing is started or stopped)",
    )
    parser.add_argument(
        "--worker-config",
        type=Path,
        default=DEFAULT_WORKER_CONFIG,
        metavar="YAML",
        help="worker config; broker, topics, group, artifact and metrics port are overridden "
        "through ECG_* variables (default: deploy/worker.yaml)",
    )
    parser.add_argument(
        "--partitions", type=positive_int, default=2, help="partitions per topic (default: 2)"
    )
    parser.add_argument(
        "--devices", type=positive_int, default=8, help="device keys to replay as (default: 8)"
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        default=None,
        metavar="WINDOWS_PER_S",
        help="replay rate (default: as fast as possible)",
    )
    parser.add_argument(
        "--timeout-s",
        type=positive_float,
        default=120.0,
        help="how long to wait for all scores after replaying (default: %(default)s)",
    )
    parser.add_argument(
        "--startup-timeout-s",
        type=positive_float,
        default=60.0,
        help="how long the worker may take to become ready (default: %(default)s)",
    )
    parser.add_argument(
        "--keep-topics",
        action="store_true",
        help="keep this run's topics afterwards (default: delete them)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=DEFAULT_RUN_DIR,
        help="where run logs go (default: .local/demo)",
    )
    return parser


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring for exit codes."""
    args = build_parser().parse_args(argv)
    return run_cli("ecg-demo", lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    if not Path(args.worker_config).is_file():
        raise ConfigError(f"worker config {args.worker_config} not found")
    # SIGTERM (e.g. from a CI timeout) takes the same path as Ctrl-C: stop what we started.
    signal.signal(signal.SIGTERM, _interrupt)
    demo = Demo(args)
    try:
        return demo.run()
    except KeyboardInterrupt:
        say("interrupted; stopping what this run started")
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let cleanup finish
        raise
    finally:
        demo.cleanup()


if __name__ == "__main__":
    sys.exit(main())
