"""Child processes of the demo: mosquitto, Home Assistant and the simulator.

Children run in their own session, so a Ctrl-C in the terminal reaches only the demo, which
then stops them in order (simulator, Home Assistant, broker). On Linux they also get SIGTERM
if the demo itself dies, so nothing is left running.
"""

from __future__ import annotations

import _socket
from collections.abc import Sequence
import contextlib
import ctypes
import glob
import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time
from typing import IO, Any, Final
import urllib.error
import urllib.request

from demo.config import ROOT, environment

_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether nothing listens on host:port (and it can be bound)."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on host that nothing listens on now."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
    finally:
        sock.close()


def accepting(port: int, host: str = "127.0.0.1") -> bool:
    """Return whether something accepts TCP connections on host:port."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.settimeout(0.2)
    try:
        sock.connect((host, port))
    except OSError:
        return False
    finally:
        sock.close()
    return True


class Child:
    """A child process with its output in a log file; `stop()` is SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, *, cwd: Path = ROOT) -> None:
        """Start the process now."""
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out: IO[bytes] = log.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            list(argv),
            cwd=cwd,
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )

    @property
    def pid(self) -> int:
        """Return the process id."""
        return self.proc.pid

    def running(self) -> bool:
        """Return whether the process is still running."""
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """Return the end of the process's log."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL after `timeout`); return its exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


def mosquitto_binary() -> str | None:
    """Return the mosquitto executable (Debian installs it under /usr/sbin), or None."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def dynamic_security_plugin() -> str | None:
    """Return mosquitto's dynamic security plugin (Debian: under the multiarch dir), or None."""
    for pattern in (
        "/usr/lib/*/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
        "/usr/local/lib/mosquitto_dynamic_security.so",
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def _dynamic_security_lines(workdir: Path, admin: tuple[str, str]) -> list[str]:
    """Write a fresh `dynamic-security.json` whose only client is `admin`; return the config.

    `mosquitto_ctrl dynsec init` makes it (the administrator with the `admin` role); every
    other user is created over `$CONTROL/dynamic-security/v1` once the broker runs.
    """
    plugin = dynamic_security_plugin()
    ctrl = shutil.which("mosquitto_ctrl") or shutil.which(
        "mosquitto_ctrl", path="/usr/bin:/usr/local/bin"
    )
    if plugin is None or ctrl is None:
        raise RuntimeError(
            "mosquitto's dynamic security plugin (or mosquitto_ctrl) is not installed; "
            "mosquitto 2.x ships both"
        )
    dynsec = workdir / "dynamic-security.json"
    dynsec.unlink(missing_ok=True)  # `init` refuses to overwrite; each run starts afresh
    username, password = admin
    done = subprocess.run(  # noqa: S603 - our own argv, no shell
        [ctrl, "dynsec", "init", str(dynsec), username, password],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mosquitto_ctrl dynsec init failed: {done.stderr or done.stdout}")
    dynsec.chmod(0o600)
    return ["allow_anonymous false", f"plugin {plugin}", f"plugin_opt_config_file {dynsec}"]


def start_mosquitto(
    workdir: Path,
    port: int,
    host: str = "127.0.0.1",
    *,
    dynamic_security: tuple[str, str] | None = None,
) -> Child:
    """Start a broker without persistence (each demo run starts with no old messages).

    With `dynamic_security` (the administrator's user name and password), mosquitto loads
    its dynamic security plugin and refuses anonymous logins.
    """
    binary = mosquitto_binary()
    if binary is None:
        raise RuntimeError("mosquitto is not installed; scripts/demo installs it with apt-get")
    workdir.mkdir(parents=True, exist_ok=True)
    access = (
        ["allow_anonymous true"]
        if dynamic_security is None
        else _dynamic_security_lines(workdir, dynamic_security)
    )
    lines = [
        f"listener {port} {host}",
        *access,
        "persistence false",
        "max_queued_messages 100000",
        "max_inflight_messages 100",
        "set_tcp_nodelay true",  # a cut command must not wait for Nagle's delayed ACK
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # mosquitto drops to its own user, which cannot write here
    config = workdir / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    child = Child("mosquitto", [binary, "-c", str(config)], workdir / "mosquitto.log")
    return _accepting_or_stop(child, port, host)


def amqtt_binary() -> str | None:
    """Return the embedded broker's executable (scripts/_env.sh `ensure_amqtt`), or None.

    `PREPAID_METER_AMQTT` names it where `.venv-broker` is not the one to run (the Debian root
    of the current Home Assistant has its own).
    """
    named = os.environ.get("PREPAID_METER_AMQTT")
    binary = Path(named) if named else ROOT / ".venv-broker" / "bin" / "amqtt"
    return str(binary) if binary.is_file() and os.access(binary, os.X_OK) else None


def start_amqtt(workdir: Path, port: int, host: str = "127.0.0.1") -> Child:
    """Start amqtt, the pure-Python broker, where mosquitto cannot be installed."""
    binary = amqtt_binary()
    if binary is None:
        raise RuntimeError("amqtt is not installed; scripts/demo installs it into .venv-broker")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "amqtt.yaml"
    config.write_text(
        "\n".join(
            [
                "listeners:",
                "  default:",
                "    type: tcp",
                f"    bind: {host}:{port}",
                "plugins:",
                "  amqtt.plugins.authentication.AnonymousAuthPlugin:",
                "    allow_anonymous: true",
                "",
            ]
        )
    )
    child = Child("amqtt", [binary, "-c", str(config)], workdir / "amqtt.log")
    return _accepting_or_stop(child, port, host)


def _accepting_or_stop(child: Child, port: int, host: str, limit: float = 20.0) -> Child:
    """Return the broker once it accepts connections; stop it and raise if it does not."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not child.running():
            raise RuntimeError(f"{child.name} exited at start:\n{child.tail()}")
        if accepting(port, host):
            return child
        time.sleep(0.05)
    child.stop()
    raise RuntimeError(f"{child.name} did not accept connections on {host}:{port} in {limit:g} s")


def start_hass(config_dir: Path, log: Path, name: str = "Home Assistant") -> Child:
    """Start Home Assistant on a prepared config folder."""
    return Child(
        name,
        [sys.executable, "-m", "homeassistant", "--config", str(config_dir)],
        log,
    )


def start_simulator(args: Sequence[str], log: Path) -> Child:
    """Start the simulator (`python -m simulator ARGS`)."""
    return Child("simulator", [sys.executable, "-m", "simulator", *args], log)


def api_get(url: str, token: str, path: str, timeout: float = 5.0) -> Any:
    """GET a Home Assistant REST API path with the token; return the decoded JSON."""
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL we built
        url + path, headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


def wait_for_config_api(hass: Child, url: str, token: str, timeout: float) -> float:
    """Wait until Home Assistant's config entries API answers the token; return the seconds.

    For an instance with no prepaid_meter entry yet (`wait_for_hass` waits for one).
    """
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if not hass.running():
            raise RuntimeError(f"Home Assistant exited while starting:\n{hass.tail()}")
        try:
            api_get(url, token, "/api/config/config_entries/entry?domain=prepaid_meter")
        except (urllib.error.URLError, OSError, ValueError):
            time.sleep(0.5)
            continue
        return time.monotonic() - began
    raise RuntimeError(
        f"Home Assistant's config entries API did not answer within {timeout:.0f} s:\n{hass.tail()}"
    )


def wait_for_hass(
    hass: Child, url: str, token: str, timeout: float, *, progress: bool = False
) -> float:
    """Wait until the prepaid_meter config entry is loaded; return the seconds it took."""
    began = time.monotonic()
    told = False
    while time.monotonic() - began < timeout:
        if not hass.running():
            raise RuntimeError(f"Home Assistant exited while starting:\n{hass.tail()}")
        try:
            entries = api_get(url, token, "/api/config/config_entries/entry?domain=prepaid_meter")
        except (urllib.error.URLError, OSError, ValueError):
            entries = None
        if entries:
            states = {str(e.get("state")) for e in entries}
            if states == {"loaded"}:
                return time.monotonic() - began
            if states & {"setup_error", "migration_error", "failed_unload"}:
                raise RuntimeError(f"the prepaid_meter entry failed to load: {entries}")
        if progress and not told and time.monotonic() - began > 20:
            print(
                "    (the first start installs Home Assistant's frontend from PyPI; "
                f"log: {hass.log})",
                flush=True,
            )
            told = True
        time.sleep(0.5)
    raise RuntimeError(
        f"Home Assistant did not load the prepaid_meter entry within {timeout:.0f} s:\n"
        f"{hass.tail()}"
    )
