#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft, broker + controller in one JVM) for development and tests.
#
#   local-kafka.sh [options] fetch|start|stop|status|logs [-f]|clean
#
# Options (each also read from the environment variable shown; flags win):
#   --port N             KAFKA_PORT             client port on 127.0.0.1 (default 9092)
#   --controller-port N  KAFKA_CONTROLLER_PORT  KRaft controller port (default: port + 1)
#   --data-dir DIR       KAFKA_DATA_DIR         config, data, log and pid file
#                                               (default <repo>/.local/kafka/<port>)
#   --libs-dir DIR       KAFKA_LIBS_DIR         broker jars (default <repo>/.local/kafka/libs)
#   --sasl-ssl-port N    KAFKA_SASL_SSL_PORT    also listen with SASL_SSL (SCRAM-SHA-512 over TLS)
#                                               on 127.0.0.1:N and enforce ACLs (docs/security.md)
#   --scram-users FILE   KAFKA_SCRAM_USERS_FILE with --sasl-ssl-port: "user password" lines,
#                                               created at format time (default: admin,
#                                               ecg-worker, ecg-tools with random passwords in
#                                               <data dir>/security/users, mode 600)
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
# clean   stops the broker and deletes its data directory (topics, offsets, logs): a
#         development broker grows with every bench run. The next start formats afresh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

usage() { sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "local-kafka: $*" >&2; exit 1; }

port="${KAFKA_PORT:-9092}"
controller_port="${KAFKA_CONTROLLER_PORT:-}"
data_dir="${KAFKA_DATA_DIR:-}"
libs_dir="${KAFKA_LIBS_DIR:-$ROOT/.local/kafka/libs}"
heap_opts="${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}"
jvm_opts="${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true}"
start_timeout_s="${KAFKA_START_TIMEOUT_S:-60}"
stop_timeout_s="${KAFKA_STOP_TIMEOUT_S:-30}"
sasl_ssl_port="${KAFKA_SASL_SSL_PORT:-}"
scram_users_file="${KAFKA_SCRAM_USERS_FILE:-}"

command=""
follow=0
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --controller-port) controller_port="${2:?--controller-port needs a value}"; shift 2 ;;
    --data-dir) data_dir="${2:?--data-dir needs a value}"; shift 2 ;;
    --libs-dir) libs_dir="${2:?--libs-dir needs a value}"; shift 2 ;;
    --sasl-ssl-port) sasl_ssl_port="${2:?--sasl-ssl-port needs a value}"; shift 2 ;;
    --scram-users) scram_users_file="${2:?--scram-users needs a value}"; shift 2 ;;
    -f|--follow) follow=1; shift ;;
    -h|--help|help) usage; exit 0 ;;
    fetch|start|stop|status|logs|clean)
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
if [ -n "$sasl_ssl_port" ]; then
  is_port "$sasl_ssl_port" || die "SASL_SSL port must be between 1 and 65535, got '$sasl_ssl_port'"
  [ "$sasl_ssl_port" != "$port" ] && [ "$sasl_ssl_port" != "$controller_port" ] \
    || die "the SASL_SSL port must differ from the client and controller ports"
fi
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

# ----------------------------------------------------------------------- SASL_SSL (optional)
# With --sasl-ssl-port the broker gets a second client listener, SASL_SSL with SCRAM-SHA-512,
# and the StandardAuthorizer: a principal without an ACL can do nothing. The plaintext listener
# stays (the start-up probe uses it) but its principal, User:ANONYMOUS, has no ACLs, so it
# reads and writes no topic. The controller listener is mutual TLS (the broker certificate's
# CN=ecg-local-broker is a super user); inter-broker traffic is SASL_SSL as "admin".
security_dir="$data_dir/security"
broker_principal="CN=ecg-local-broker"

make_certificates() {
  # A throwaway CA and a broker certificate for 127.0.0.1/localhost, made once per data dir.
  [ -s "$security_dir/broker.p12" ] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl not found (needed for --sasl-ssl-port)"
  local d="$security_dir" pass
  pass="$(openssl rand -hex 16)"
  {
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=ecg-local-ca" \
      -keyout "$d/ca.key" -out "$d/ca.pem"
    openssl req -newkey rsa:2048 -nodes -subj "/$broker_principal" \
      -keyout "$d/broker.key" -out "$d/broker.csr"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
      >"$d/broker.ext"
    openssl x509 -req -days 30 -in "$d/broker.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
      -CAcreateserial -extfile "$d/broker.ext" -out "$d/broker.pem"
    openssl pkcs12 -export -name broker -in "$d/broker.pem" -inkey "$d/broker.key" \
      -certfile "$d/ca.pem" -passout "pass:$pass" -out "$d/broker.p12.tmp"
  } >>"$console_file" 2>&1 || die "openssl could not make the certificates (see $console_file)"
  printf '%s\n' "$pass" >"$d/keystore.pass"
  chmod 600 "$d"/*.key "$d/keystore.pass"
  mv "$d/broker.p12.tmp" "$d/broker.p12"
}

users_file() {
  # The SCRAM users: --scram-users, else generated once with random passwords.
  if [ -n "$scram_users_file" ]; then
    [ -r "$scram_users_file" ] || die "cannot read the SCRAM users file $scram_users_file"
    echo "$scram_users_file"
    return 0
  fi
  if [ ! -s "$security_dir/users" ]; then
    local name
    for name in admin ecg-worker ecg-tools; do
      printf '%s %s\n' "$name" "$(openssl rand -hex 16)"
    done >"$security_dir/users"
    chmod 600 "$security_dir/users"
  fi
  echo "$security_dir/users"
}

user_password() {
  # The password of user $1 in the users file (empty when absent).
  awk -v user="$1" '$1 == user { print $2; exit }' "$(users_file)"
}

scram_arguments() {
  # --add-scram arguments for kafka-storage format, NUL-separated.
  local name password file
  file="$(users_file)"
  while read -r name password; do
    [ -n "$name" ] && [ "${name:0:1}" != "#" ] || continue
    [[ "$name$password" =~ ^[A-Za-z0-9._-]+$ ]] \
      || die "$file: user names and passwords may use only A-Z a-z 0-9 . _ - (user '$name')"
    printf '%s\0' --add-scram "SCRAM-SHA-512=[name=$name,password=$password]"
  done <"$file"
}

write_security_props() {
  local admin_password keystore_pass
  admin_password="$(user_password admin)"
  [ -n "$admin_password" ] || die "$(users_file) has no 'admin' user (the super user)"
  keystore_pass="$(cat "$security_dir/keystore.pass")"
  chmod 600 "$props"
  cat >>"$props" <<EOF
# SASL_SSL (--sasl-ssl-port): SCRAM-SHA-512 over TLS, ACLs enforced. These override the above.
listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl_ssl_port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl_ssl_port,CONTROLLER://127.0.0.1:$controller_port
listener.security.protocol.map=CONTROLLER:SSL,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin_password";
ssl.keystore.type=PKCS12
ssl.keystore.location=$security_dir/broker.p12
ssl.keystore.password=$keystore_pass
ssl.key.password=$keystore_pass
ssl.truststore.type=PEM
ssl.truststore.location=$security_dir/ca.pem
listener.name.controller.ssl.client.auth=required
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:$broker_principal
allow.everyone.if.no.acl.found=false
EOF
}

prepare_security() {
  [ -n "$sasl_ssl_port" ] || return 0
  port_in_use "$sasl_ssl_port" \
    && die "SASL_SSL port $sasl_ssl_port is taken by another process; choose --sasl-ssl-port"
  mkdir -p "$security_dir"
  chmod 700 "$security_dir"
  make_certificates
  write_security_props
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
  # SCRAM users are written into the metadata log at format time.
  local -a scram=()
  if [ -n "$sasl_ssl_port" ]; then
    stamp="$stamp sasl_ssl_port=$sasl_ssl_port"
    mapfile -d '' scram < <(scram_arguments)
  fi
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
      -c "$props" "${scram[@]}" >>"$console_file" 2>&1; then
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
    prepare_security
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
  [ -z "$sasl_ssl_port" ] \
    || echo "local-kafka: SASL_SSL on 127.0.0.1:$sasl_ssl_port (CA $security_dir/ca.pem, users $(users_file))" >&2
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

clean() {
  if [ ! -e "$data_dir" ]; then
    echo "local-kafka: nothing to clean ($data_dir does not exist)" >&2
    return 0
  fi
  # Only a directory this script made: --data-dir may point anywhere.
  [ -f "$props" ] || [ -d "$data_dir/data" ] \
    || die "$data_dir holds no local-kafka broker (no server.properties, no data/); not deleting it"
  stop
  local size
  size="$(du -sh "$data_dir" 2>/dev/null | cut -f1)"
  rm -rf "$data_dir"
  echo "local-kafka: deleted $data_dir (${size:-?}); the next start formats new storage" >&2
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
  clean) clean ;;
esac
