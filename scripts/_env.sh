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

ensure_chromium() {
  # The real-browser test (tests/browser) drives Debian's Chromium; Playwright never downloads
  # a browser here (its `playwright install` would, and this network is closed to it).
  if [ ! -x /usr/bin/chromium ]; then
    echo "==> installing chromium from Debian's packages (for the browser test)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    { $sudo apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null; } || true
    if [ ! -x /usr/bin/chromium ]; then
      echo "error: /usr/bin/chromium is missing and apt-get could not install Debian's chromium package (the browser test needs it)" >&2
      return 1
    fi
  fi
}

ensure_browser_venv() {
  # Playwright (requirements_browser.txt) in the oldest version's .venv, which runs the
  # browser test; kept out of requirements_test.txt so scripts/demo does not install it.
  local stamp="$VENV/.requirements_browser.sha256" want
  want="$(sha256sum < "$ROOT/requirements_browser.txt" | cut -d' ' -f1)"
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  echo "==> installing Playwright into $VENV (requirements_browser.txt)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ROOT/requirements_browser.txt" 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -c 'import playwright.sync_api' || return 1
  echo "$want" > "$stamp"
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

# ---------------------------------------------------------------- the current Home Assistant
# Home Assistant 2026.x needs Python 3.14. Where `python3.14` is on PATH it gets a venv of its
# own (.venv-current); otherwise a small Debian root (testing, "forky", which ships python3.14)
# is built with mmdebstrap, outside the checkout, keyed by the pins, and reused by later runs.
# Commands then run inside it with the checkout bound at the same path (needs root).
CURRENT_PINS="$ROOT/requirements_test_current.txt"
CURRENT_VENV="$ROOT/.venv-current"
CURRENT_CACHE="${PREPAID_METER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/prepaid_meter}"
# g++: assist_pipeline's audio wheels (below, in requirements_test_current.txt) have no build
# for Python 3.14 yet and are compiled from source.
CURRENT_PACKAGES="python3.14,python3.14-venv,python3.14-dev,gcc,g++,ca-certificates,mosquitto,libffi-dev,libssl-dev"
CURRENT_ROOT=""   # set by ensure_current when the Debian root is used

host_python314() {
  command -v python3.14 >/dev/null 2>&1 &&
    python3.14 -c 'import sys; assert sys.version_info[:2] == (3, 14)' >/dev/null 2>&1
}

ensure_current() {
  local want
  want="$(cat "$CURRENT_PINS" "$ROOT/requirements_broker.txt" <(echo "$CURRENT_PACKAGES") | sha256sum | cut -c1-16)"
  if host_python314; then
    local stamp="$CURRENT_VENV/.requirements.sha256"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
      echo "==> installing the current Home Assistant into $CURRENT_VENV (python3.14 on PATH)"
      python3.14 -m venv "$CURRENT_VENV" || return 1
      "$CURRENT_VENV/bin/python" -m pip install --quiet -r "$CURRENT_PINS" 2>&1 | grep -v '^WARNING: Location' || true
      "$CURRENT_VENV/bin/python" -c 'import homeassistant, aiomqtt, hypothesis' || return 1
      echo "$want" > "$stamp"
    fi
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "error: the current Home Assistant needs Python 3.14: put python3.14 on PATH, or run as root so a Debian root with it can be built" >&2
    return 1
  fi
  CURRENT_ROOT="$CURRENT_CACHE/ha-current-$want"
  [ -f "$CURRENT_ROOT/.ready" ] && return 0
  if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "==> installing mmdebstrap from Debian's packages"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; } || return 1
  fi
  local building="$CURRENT_ROOT.building"
  rm -rf "$building"
  mkdir -p "$CURRENT_CACHE"
  echo "==> building a Debian root with Python 3.14 in $CURRENT_ROOT (about 2 minutes, once)"
  # Each step must succeed (callers may run this inside `if`, where `set -e` does not apply).
  mmdebstrap --quiet --variant=minbase --aptopt='Acquire::Check-Valid-Until "false"' \
    --include="$CURRENT_PACKAGES" forky "$building" || return 1
  cp /etc/ssl/certs/ca-certificates.crt "$building/etc/ssl/certs/" || return 1
  cp "$CURRENT_PINS" "$building/requirements.txt" || return 1
  cp "$ROOT/requirements_broker.txt" "$building/requirements_broker.txt" || return 1
  in_root "$building" / python3.14 -m venv /opt/ha || return 1
  in_root "$building" / /opt/ha/bin/python -m pip install --quiet -r /requirements.txt 2>&1 | grep -v '^WARNING: Location' || true
  in_root "$building" / /opt/ha/bin/python -c 'import homeassistant, aiomqtt, hypothesis' || return 1
  # The demo's embedded broker (the host's .venv-broker runs the host's Python, absent here).
  in_root "$building" / python3.14 -m venv /opt/broker || return 1
  in_root "$building" / /opt/broker/bin/python -m pip install --quiet -r /requirements_broker.txt 2>&1 | grep -v '^WARNING: Location' || true
  touch "$building/.ready" || return 1
  rm -rf "$CURRENT_ROOT"
  mv "$building" "$CURRENT_ROOT" || return 1
  # Older roots of other pins are not needed any more.
  find "$CURRENT_CACHE" -maxdepth 1 -name 'ha-current-*' ! -path "$CURRENT_ROOT" -exec rm -rf {} +
}

# in_root ROOT DIR CMD...: run CMD in the Debian root, in DIR, with the checkout bound at its
# own path; the mounts live in a private mount namespace and go with the command.
in_root() {
  local root="$1" dir="$2"
  shift 2
  mkdir -p "$root$ROOT"
  # The contracts beside the checkout (../shared: the golden billing cases) come along.
  local shared
  shared="$(cd "$ROOT/.." && pwd)/shared"
  [ -d "$shared" ] && mkdir -p "$root$shared" || shared=""
  unshare --mount --propagation private -- sh -c '
    root="$1"; src="$2"; dir="$3"; shared="$4"; shift 4
    mount --rbind /proc "$root/proc" && mount --rbind /dev "$root/dev" &&
      mount --rbind /sys "$root/sys" && mount --bind "$src" "$root$src" &&
      { [ -z "$shared" ] || mount --bind -o ro "$shared" "$root$shared"; } &&
      exec chroot "$root" /usr/bin/env -C "$dir" \
        PATH="/opt/ha/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" HOME=/root \
        PREPAID_METER_AMQTT=/opt/broker/bin/amqtt "$@"
  ' in_root "$root" "$ROOT" "$dir" "$shared" "$@"
}

# current CMD...: run CMD (python, pytest, mypy, ...) with the current Home Assistant, in the
# checkout.
current() {
  if [ -n "$CURRENT_ROOT" ]; then
    in_root "$CURRENT_ROOT" "$ROOT" "$@"
  else
    (cd "$ROOT" && PATH="$CURRENT_VENV/bin:$PATH:/usr/sbin" "$@")
  fi
}
