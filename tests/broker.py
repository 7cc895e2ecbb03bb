"""A real mosquitto broker on a free loopback port, for tests and benchmarks.

`Mosquitto(workdir, dynamic_security=True)` loads mosquitto's dynamic security plugin with a
fresh `dynamic-security.json` whose only client is the administrator `DYNSEC_ADMIN` (password
`DYNSEC_ADMIN_PASSWORD`, role `admin` as `mosquitto_ctrl dynsec init` makes it); anonymous
logins are refused and every other user is created over `$CONTROL/dynamic-security/v1`.

`_socket` is used directly for the port probe because pytest-socket (loaded by the Home
Assistant test plugin) patches `socket.socket` before fixtures run.
"""

from __future__ import annotations

import _socket
import glob
import os
from pathlib import Path
import shutil
import subprocess
import time


def mosquitto_binary() -> str:
    """Return the mosquitto executable, which Debian installs under /usr/sbin."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("mosquitto is not installed; scripts/test installs it")
    return found


DYNSEC_ADMIN = "dynsec-admin"
DYNSEC_ADMIN_PASSWORD = "dynsec-admin-password"


def dynamic_security_plugin() -> str:
    """Return the path of mosquitto's dynamic security plugin (Debian: under the multiarch dir)."""
    for pattern in (
        "/usr/lib/*/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
        "/usr/local/lib/mosquitto_dynamic_security.so",
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise RuntimeError("mosquitto_dynamic_security.so is not installed (mosquitto 2.x ships it)")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
    finally:
        sock.close()


def _accepting(port: int) -> bool:
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.settimeout(0.2)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        return False
    finally:
        sock.close()
    return True


class Mosquitto:
    """One mosquitto process with a generated config; can be stopped and started again."""

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persistence: bool = True,
        passwords: dict[str, str] | None = None,
        dynamic_security: bool = False,
    ) -> None:
        """Prepare a broker in workdir; nothing runs until start().

        `passwords` (a password file) and `dynamic_security` (the plugin's own users) exclude
        each other.
        """
        if passwords and dynamic_security:
            raise ValueError("passwords and dynamic_security exclude each other")
        self.dynamic_security = dynamic_security
        self.workdir = workdir
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            # Nagle's delay off: a command that follows a PUBACK would wait ~40 ms for the
            # peer's delayed ACK (README: the broker setting for fast cuts).
            "set_tcp_nodelay true",
            f"log_dest file {workdir / 'mosquitto.log'}",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to the `mosquitto` user, which cannot write
            # pytest's 0700 temporary folders: keep root so persistence and logs work.
            lines.append("user root")
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/"]
        if passwords:
            pwfile = workdir / "passwd"
            pwfile.write_text("")
            for user, password in passwords.items():
                subprocess.run(
                    [
                        shutil.which("mosquitto_passwd", path="/usr/bin:/usr/sbin")
                        or "mosquitto_passwd",
                        "-b",
                        str(pwfile),
                        user,
                        password,
                    ],
                    check=True,
                )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        elif dynamic_security:
            dynsec = workdir / "dynamic-security.json"
            dynsec.unlink(missing_ok=True)  # `init` refuses to overwrite
            subprocess.run(
                [
                    shutil.which("mosquitto_ctrl", path="/usr/bin:/usr/local/bin")
                    or "mosquitto_ctrl",
                    "dynsec",
                    "init",
                    str(dynsec),
                    DYNSEC_ADMIN,
                    DYNSEC_ADMIN_PASSWORD,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            lines += [
                "allow_anonymous false",
                f"plugin {dynamic_security_plugin()}",
                f"plugin_opt_config_file {dynsec}",
            ]
        else:
            lines.append("allow_anonymous true")
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        """Return mqtt://host:port."""
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        if self._proc is not None:
            return
        self._proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log_file = self.workdir / "mosquitto.log"
                log = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
                raise RuntimeError(f"mosquitto exited at start: {log}")
            if _accepting(self.port):
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start in 10 s")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, so it saves its persistent sessions)."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Stop and start again on the same port."""
        self.stop()
        self.start()
