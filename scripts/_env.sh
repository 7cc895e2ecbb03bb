# Shared by scripts/test and scripts/demo: find Python 3.13, make .venv, install what is pinned.
# shellcheck shell=bash
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
BROKER_VENV="$ROOT/.venv-broker"

find_python() {
  local candidate
  for candidate in python3.13 "$(command -v pyenv >/dev/null 2>&1 && pyenv root)/versions/3.13.0/bin/python3.13" \
      /root/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.13 /usr/local/bin/python3.13; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1; then
      command -v "$candidate" || echo "$candidate"
      return 0
    fi
  done
  echo "error: Python 3.13 is needed (Home Assistant 2025.4 requires it) and none was found" >&2
  return 1
}

ensure_venv() {
  local stamp="$VENV/.requirements.sha256" want
  want="$(cat "$ROOT/requirements_test.txt" | sha256sum | cut -d' ' -f1)"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$(find_python)" -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing pinned requirements (first run takes a few minutes)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements_test.txt" 2>&1 | grep -v '^WARNING: Location' || true
    "$VENV/bin/python" -c 'import homeassistant, aiomqtt, hypothesis' # fail loudly if the install did
    echo "$want" > "$stamp"
  fi
}

ensure_mosquitto() {
  if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "==> installing mosquitto from Debian's packages"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mosquitto >/dev/null
  fi
  # The Debian package starts a system broker on 1883 where systemd runs; tests never use it.
}

ensure_amqtt() {
  # The embedded pure-Python broker (amqtt, pinned in requirements_broker.txt), in a venv of
  # its own. The demo uses it where mosquitto is missing; the tests run the demo on it too.
  local stamp="$BROKER_VENV/.requirements.sha256" want
  want="$(sha256sum < "$ROOT/requirements_broker.txt" | cut -d' ' -f1)"
  if [ -x "$BROKER_VENV/bin/amqtt" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "==> installing the embedded MQTT broker amqtt into $BROKER_VENV"
  "$(find_python)" -m venv "$BROKER_VENV" || return 1
  "$BROKER_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements_broker.txt" 2>&1 | grep -v '^WARNING: Location' || true
  "$BROKER_VENV/bin/amqtt" --version >/dev/null || return 1
  echo "$want" > "$stamp"
}
