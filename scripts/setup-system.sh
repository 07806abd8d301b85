#!/usr/bin/env bash
# Installs the system packages the project needs, only those that are missing:
#   java + maven  (to assemble and run the local Kafka broker)
#   prometheus    (prometheus + promtool, for metrics and alert-rule tests)
#   kcat          (an independent Kafka client used in tests and docs)
#   openssl       (the throwaway CA of local-kafka.sh --sasl-ssl-port)
#   dataset-fashion-mnist (offline Fashion-MNIST for the image models)
#   python3-venv  (so `make` can create .venv)
# Uses apt-get (as root, or through sudo). Safe to run repeatedly.
set -euo pipefail

java_major() {
  # "17.0.15" -> 17 ; "1.8.0_392" -> 1 (too old either way)
  java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p'
}

need=()
# `python3 -m venv` needs ensurepip, which Debian ships separately.
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# Kafka 4.x needs Java 17 or newer.
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  need+=(openjdk-17-jre-headless)
fi
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v kcat >/dev/null 2>&1 || need+=(kcat)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)

if [ ${#need[@]} -eq 0 ]; then
  echo "setup-system: all system packages present"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-system: missing ${need[*]} and no apt-get here; install them with your package manager" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "setup-system: need root or sudo to install ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "setup-system: installing ${need[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
# The Debian prometheus package starts a system service; the project runs its own.
if command -v systemctl >/dev/null 2>&1; then $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
