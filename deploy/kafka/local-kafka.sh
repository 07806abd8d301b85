#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft, broker + controller in one JVM) for development and tests.
#
#   local-kafka.sh [options] fetch|start|stop|status|logs [-f]
#
# Options (each also read from the environment variable shown; flags win):
#   --port N             KAFKA_PORT             client port on 127.0.0.1 (default 9092)
#   --controller-port N  KAFKA_CONTROLLER_PORT  KRaft controller port (default: port + 1)
#   --data-dir DIR       KAFKA_DATA_DIR         config, data, log and pid file
#                                               (default <repo>/.local/kafka/<port>)
#   --libs-dir DIR       KAFKA_LIBS_DIR         broker jars (default <repo>/.local/kafka/libs)
# Other environment: KAFKA_HEAP_OPTS (default "-Xmx512m -Xms256m"), KAFKA_JVM_OPTS,
#   KAFKA_START_TIMEOUT_S (default 60), KAFKA_STOP_TIMEOUT_S (default 30).
#
# fetch   gathers the broker jars from Maven Central once (deploy/kafka/pom.xml).
# start   formats the storage on first use, starts the broker in the background, waits until
#         it answers Kafka metadata requests and prints the bootstrap address. Starting a
#         running broker is fine. On failure it prints the log tail and exits 1.
# stop    stops the broker gracefully (SIGTERM, waits; SIGKILL after the stop timeout).
# status  exit 0 when the broker runs and answers, 1 otherwise.
# logs    prints the end of the broker log (-f follows it).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "local-kafka: $*" >&2; exit 1; }

port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-}"
data_dir="${KAFKA_DATA_DIR:-}"
libs_dir="${KAFKA_LIBS_DIR:-$ROOT/.local/kafka/libs}"
heap_opts="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
jvm_opts="${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true}"
start_timeout_s="${KAFKA_START_TIMEOUT_S:-60}"
stop_timeout_s="${KAFKA_STOP_TIMEOUT_S:-30}"

command=""
follow=0
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --controller-port) controller_port="${2:?--controller-port needs a value}"; shift 2 ;;
    --data-dir) data_dir="${2:?--data-dir needs a value}"; shift 2 ;;
    --libs-dir) libs_dir="${2:?--libs-dir needs a value}"; shift 2 ;;
    -f|--follow) follow=1; shift ;;
    -h|--help|help) usage; exit 0 ;;
    fetch|start|stop|status|logs)
      [ -z "$command" ] || die "one command at a time (got '$command' and '$1')"
      command="$1"; shift ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
[ -n "$command" ] || { usage >&2; exit 2; }

is_port() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }
is_port "$port" || die "port must be a number between 1 and 65535, got '$port'"
controller_port="${controller_port:-$((port + 1))}"
is_port "$controller_port" || die "controller port must be between 1 and 65535, got '$controller_port'"
[ "$port" != "$controller_port" ] || die "client and controller ports must differ (both $port)"
data_dir="$(realpath -m "${data_dir:-$ROOT/.local/kafka/$port}")"
libs_dir="$(realpath -m "$libs_dir")"

props="$data_dir/server.properties"
pid_file="$data_dir/kafka.pid"
log_file="$data_dir/kafka.log"
console_file="$data_dir/console.log"
format_stamp="$data_dir/formatted-for"
bootstrap="127.0.0.1:$port"

have_libs() { compgen -G "$libs_dir/kafka_2.13-*.jar" >/dev/null; }

require_java17() {
  command -v java >/dev/null 2>&1 || die "java not found; run 'make system' (or install a JRE 17+)"
  local major
  major="$(java -XshowSettings:properties -version 2>&1 \
    | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')"
  if [ -z "$major" ] || [ "$major" -lt 17 ]; then
    die "Kafka 4 needs Java 17 or newer, but 'java' is version ${major:-unknown} ($(command -v java)); run 'make system' or put a JRE 17+ first on PATH"
  fi
}

fetch() {
  if have_libs; then return 0; fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found; run 'make system' (or install maven)"
  require_java17
  echo "local-kafka: fetching the broker jars into $libs_dir" >&2
  local tmp="$libs_dir.tmp.$$"
  rm -rf "$tmp"
  if ! mvn -q -B -f "$HERE/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime >&2; then
    rm -rf "$tmp"
    die "mvn could not download the broker jars (see above)"
  fi
  # Move into place only when complete, so an interrupted fetch is simply retried.
  mkdir -p "$(dirname "$libs_dir")"
  rm -rf "$libs_dir"
  mv "$tmp" "$libs_dir"
}

running_pid() {
  # The pid from the pid file, when that process is alive and is our broker.
  [ -f "$pid_file" ] || return 1
  local pid
  pid="$(cat "$pid_file" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $props" || return 1
  echo "$pid"
}

probe() {
  # True when the broker answers a Kafka Metadata request (v0) listing at least one broker.
  python3 - "$port" <<'EOF'
import socket, struct, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2) as s:
        body = struct.pack(">hhih", 3, 0, 7, 5) + b"probe" + struct.pack(">i", 0)
        s.sendall(struct.pack(">i", len(body)) + body)
        head = b""
        while len(head) < 12:
            chunk = s.recv(12 - len(head))
            if not chunk:
                sys.exit(1)
            head += chunk
        _size, correlation_id, brokers = struct.unpack(">iii", head)
        sys.exit(0 if correlation_id == 7 and brokers >= 1 else 1)
except OSError:
    sys.exit(1)
EOF
}

port_in_use() {
  # SO_REUSEADDR as the broker itself binds: connections of a killed broker linger in
  # TIME_WAIT for a minute and must not count as "taken"; a live listener still does.
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
finally:
    s.close()
sys.exit(1)
EOF
}

log_tail() {
  echo "---- last lines of $log_file ----" >&2
  tail -n "${1:-40}" "$log_file" >&2 2>/dev/null || echo "(no log yet)" >&2
  if [ -s "$console_file" ]; then
    echo "---- last lines of $console_file ----" >&2
    tail -n 20 "$console_file" >&2
  fi
}

write_props() {
  cat >"$props" <<EOF
# Written by deploy/kafka/local-kafka.sh on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data_dir/data
# One node: every internal topic has one replica; few partitions keep start-up quick.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Topics are created on purpose (by the worker's create_topics or by tests), never by a typo.
auto.create.topics.enable=false
num.partitions=1
# A development broker: keep a day or 1 GiB per partition, whichever comes first.
log.retention.hours=24
log.retention.bytes=1073741824
log.segment.bytes=67108864
log.retention.check.interval.ms=300000
num.network.threads=2
num.io.threads=4
EOF
}

format_storage() {
  require_java17
  local stamp="port=$port controller_port=$controller_port"
  if [ -f "$data_dir/data/meta.properties" ]; then
    # The controller's address is recorded in the metadata log at format time.
    if [ -f "$format_stamp" ] && [ "$(cat "$format_stamp")" != "$stamp" ]; then
      die "$data_dir was formatted for $(cat "$format_stamp"), not $stamp; use those ports, another --data-dir, or delete $data_dir"
    fi
    return 0
  fi
  local cluster_id
  cluster_id="$(java -cp "$libs_dir/*" kafka.tools.StorageTool random-uuid 2>>"$console_file")" \
    || { log_tail; die "could not generate a cluster id"; }
  if ! java -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$data_dir" \
      -cp "$libs_dir/*" kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$props" >>"$console_file" 2>&1; then
    log_tail
    die "formatting the storage in $data_dir/data failed"
  fi
  echo "$stamp" >"$format_stamp"
}

start() {
  local pid
  if pid="$(running_pid)"; then
    if probe; then
      echo "local-kafka: already running (pid $pid), bootstrap $bootstrap" >&2
      echo "$bootstrap"
      return 0
    fi
  else
    rm -f "$pid_file"
    port_in_use "$port" && die "port $port is taken by another process; choose --port"
    port_in_use "$controller_port" \
      && die "controller port $controller_port is taken by another process; choose --controller-port"
    fetch
    mkdir -p "$data_dir"
    write_props
    format_storage
    : >"$console_file"
    # setsid + nohup: the broker outlives the shell that started it; stop uses the pid file.
    # shellcheck disable=SC2086
    setsid nohup java $heap_opts $jvm_opts \
      -Dlog4j2.configurationFile="$HERE/log4j2.properties" -Dkafka.logs.dir="$data_dir" \
      -cp "$libs_dir/*" kafka.Kafka "$props" >>"$console_file" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pid_file"
    echo "local-kafka: starting (pid $pid) on $bootstrap, data in $data_dir" >&2
  fi
  local deadline=$((SECONDS + start_timeout_s))
  until probe; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pid_file"
      log_tail
      die "the broker exited during start-up (log: $log_file)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log_tail
      die "the broker did not answer on $bootstrap within ${start_timeout_s}s (still running as pid $pid; 'stop' ends it)"
    fi
    sleep 0.5
  done
  echo "local-kafka: ready on $bootstrap" >&2
  echo "$bootstrap"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$pid_file"
    echo "local-kafka: not running ($data_dir)" >&2
    return 0
  fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + stop_timeout_s))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "local-kafka: no clean shutdown within ${stop_timeout_s}s; killing pid $pid" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$pid_file"
  echo "local-kafka: stopped (pid $pid)" >&2
}

status() {
  local pid
  if pid="$(running_pid)"; then
    if probe; then
      echo "local-kafka: running (pid $pid) on $bootstrap, data in $data_dir"
      return 0
    fi
    echo "local-kafka: pid $pid is running but $bootstrap does not answer yet"
    return 1
  fi
  echo "local-kafka: not running ($data_dir)"
  return 1
}

logs() {
  [ -f "$log_file" ] || die "no log at $log_file (has the broker been started with these options?)"
  if [ "$follow" -eq 1 ]; then exec tail -n 100 -F "$log_file"; fi
  tail -n 100 "$log_file"
}

case "$command" in
  fetch) fetch; echo "local-kafka: broker jars in $libs_dir" >&2 ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  logs) logs ;;
esac
