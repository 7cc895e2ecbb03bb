"""Real-browser fixtures: the demo's Home Assistant, and Debian's Chromium driven by Playwright.

The demo is prepared and started the way `tests/test_demo.py` does it (`python -m demo setup`,
`demo.processes`), with the full configuration `scripts/demo` runs (frontend, recorder,
history, logbook, energy), the demo's 30 meters and their scenarios, on the session's
mosquitto. One Home Assistant serves every test of a module; each test opens its own browser
contexts (one per screen size), so each logs in afresh.

Chromium is Debian's (`/usr/bin/chromium`, installed by `scripts/_env.sh` `ensure_chromium`;
`PREPAID_METER_CHROMIUM` names another). Playwright never downloads a browser here. Screenshots
go to `.artifacts/browser/` (emptied when the module starts; `PREPAID_METER_ARTIFACTS` names
another folder), and the run's summary prints where they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Final
import urllib.error
import urllib.request

from _pytest.terminal import TerminalReporter
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)
import pytest

from demo.config import ROOT, DemoSettings, environment, read_token
from demo.people import setup_people
from demo.processes import Child, api_get, free_port, start_hass, start_simulator, wait_for_hass
from tests.broker import Mosquitto

CHROMIUM: Final = Path(os.environ.get("PREPAID_METER_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS: Final = Path(os.environ.get("PREPAID_METER_ARTIFACTS", ROOT / ".artifacts" / "browser"))
#: The flags this machine needs (its network is closed: no background connections). Playwright
#: adds --headless and a fresh --user-data-dir of its own.
CHROMIUM_ARGS: Final = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: Screen sizes by name: a laptop, and a phone (the size of a current iPhone, in CSS pixels).
VIEWPORTS: Final[dict[str, ViewportSize]] = {
    "desktop": {"width": 1280, "height": 800},
    "phone": {"width": 390, "height": 844},
}
PREFIX: Final = "browsertest"  # the session broker is shared: keep to our own topics
HASS_START_TIMEOUT: Final = 120.0
BALANCES_TIMEOUT: Final = 60.0
#: Enough households with a numeric balance to show the overview as a person would see it
#: (offline and garbage-sending meters may never report).
BALANCES_WANTED: Final = 20
UI_TIMEOUT_MS: Final = 30_000

#: Collects the text a person sees, through every open shadow root (Home Assistant's frontend
#: is web components all the way down; `innerText` of the body shows none of it).
_VISIBLE_TEXT_JS: Final = """
() => {
  const out = [];
  const visible = (el) => {
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) return false;
    const style = getComputedStyle(el);
    return style.visibility !== 'hidden' && style.display !== 'none';
  };
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) {
      const text = node.textContent.trim();
      if (text && node.parentElement && visible(node.parentElement)) out.push(text);
      return;
    }
    if (node.nodeType !== Node.ELEMENT_NODE && node.nodeType !== Node.DOCUMENT_FRAGMENT_NODE) {
      return;
    }
    let children = node.childNodes;
    if (node.nodeType === Node.ELEMENT_NODE) {
      if (['SCRIPT', 'STYLE', 'TEMPLATE'].includes(node.tagName)) return;
      // A host's own children are shown where its shadow root's slots put them.
      if (node.shadowRoot) children = [node.shadowRoot];
      else if (node.tagName === 'SLOT' && node.assignedNodes().length) {
        children = node.assignedNodes();
      }
    }
    for (const child of children) walk(child);
  };
  walk(document.body);
  return out.join('\\n');
}
"""


def decimal_or_none(text: str) -> Decimal | None:
    """Return text as a Decimal, or None if it is not a number."""
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


@dataclass
class DemoHass:
    """The demo's Home Assistant, its broker topics and simulator; `ready()` before use."""

    url: str
    token: str
    config_dir: Path
    username: str
    password: str
    settings: DemoSettings
    hass: Child
    logs: Path
    children: list[Child]
    meters: list[dict[str, Any]] = field(default_factory=list)
    #: The resident login and households (`demo.config.Resident`), and its password.
    resident: dict[str, Any] = field(default_factory=dict)
    resident_password: str = ""
    #: The dashboards the demo made: the operator's, the resident's, the neighbour's (URLs).
    dashboards: list[str] = field(default_factory=list)
    _ready: bool = False

    def ready(self) -> None:
        """Wait for the entry, start the simulator, wait for balances (once per module).

        Needs sockets (`socket_enabled`), which a module fixture cannot request.
        """
        if self._ready:
            return
        wait_for_hass(self.hass, self.url, self.token, HASS_START_TIMEOUT)
        made = setup_people(self.url, self.token, self.resident)
        self.dashboards = [str(d["url_path"]) for d in made]
        sim_args = [*self.settings.simulator_args(speed=600, interval=1), "--quiet"]
        self.children.append(start_simulator(sim_args, self.logs / "simulator.log"))
        labels = {str(m["label"]) for m in self.meters}
        numeric: set[str] = set()
        deadline = time.monotonic() + BALANCES_TIMEOUT
        while time.monotonic() < deadline:
            try:
                states = api_get(self.url, self.token, "/api/states")
            except (urllib.error.URLError, OSError):
                states = []
            numeric = {
                str(s["attributes"].get("friendly_name", "")).removesuffix(" Balance")
                for s in states
                if str(s["entity_id"]).endswith("_balance")
                and decimal_or_none(str(s["state"])) is not None
            } & labels
            if len(numeric) >= BALANCES_WANTED:
                break
            time.sleep(1)
        assert len(numeric) >= BALANCES_WANTED, (numeric, self.hass.tail())
        self._ready = True

    def state(self, entity_id: str) -> dict[str, Any]:
        """Return one entity's state from the REST API."""
        found: dict[str, Any] = api_get(self.url, self.token, f"/api/states/{entity_id}")
        return found

    def states(self) -> list[dict[str, Any]]:
        """Return every entity's state from the REST API."""
        states: list[dict[str, Any]] = api_get(self.url, self.token, "/api/states")
        return states

    def template(self, template: str) -> str:
        """Render a template through the REST API (e.g. `{{ device_id('sensor.x') }}`)."""
        request = urllib.request.Request(
            f"{self.url}/api/template",
            data=json.dumps({"template": template}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.read().decode())


@pytest.fixture(scope="module")
def demo_processes(
    tmp_path_factory: pytest.TempPathFactory, mosquitto_session: Mosquitto
) -> Iterator[DemoHass]:
    """Prepare the demo's config folder and start Home Assistant; stop everything at the end."""
    work = tmp_path_factory.mktemp("browser_demo")
    config_dir = work / "config"
    http_port = free_port()
    settings = DemoSettings(
        config_dir=config_dir,
        http_port=http_port,
        broker_host=mosquitto_session.host,
        broker_port=mosquitto_session.port,
        prefix=PREFIX,
        start=int(time.time()) - 86_400,
    )
    setup = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo",
            "setup",
            "--config-dir",
            str(config_dir),
            "--http-port",
            str(http_port),
            "--broker-host",
            settings.broker_host,
            "--broker-port",
            str(settings.broker_port),
            "--prefix",
            PREFIX,
            "--start",
            str(settings.start),
        ],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert setup.returncode == 0, setup.stderr
    summary = json.loads(setup.stdout)
    children: list[Child] = []
    try:
        hass = start_hass(config_dir, work / "hass.log")
        children.append(hass)
        yield DemoHass(
            url=str(summary["url"]),
            token=read_token(config_dir),
            config_dir=config_dir,
            username=str(summary["username"]),
            password=settings.password,
            settings=settings,
            hass=hass,
            logs=work,
            children=children,
            meters=list(summary["meters"]),
            resident=dict(summary["resident"]),
            resident_password=settings.resident_password,
        )
    finally:
        for child in reversed(children):
            child.stop(timeout=20)


@pytest.fixture
def demo_hass(demo_processes: DemoHass, socket_enabled: None) -> DemoHass:
    """Return the module's demo Home Assistant, up, with live balances."""
    demo_processes.ready()
    return demo_processes


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Return the folder for screenshots, emptied once per test session."""
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture
def playwright() -> Iterator[Playwright]:
    """Return Playwright, for one test.

    Per test, not per module: while Playwright's sync API is started, its own event loop counts
    as running in this thread, and the Home Assistant plugin's cleanup check after each test
    could not run the test's loop. Starting it and Chromium takes about a second.
    """
    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Return Debian's Chromium, headless, with the flags this machine needs."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium package")
    chromium = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
    )
    yield chromium
    chromium.close()


class Screen:
    """One browser context (a person at one screen size) on the demo's Home Assistant.

    Generic on purpose: `login(user, password)`, `open(path)`, `screenshot(name)` and
    `visible_text()` serve the operator, a resident and any dashboard alike.
    """

    def __init__(self, context: BrowserContext, base_url: str, name: str, folder: Path) -> None:
        """Open a page in the context; `name` (e.g. desktop) prefixes the screenshots."""
        self.context = context
        self.page: Page = context.new_page()
        self.page.set_default_timeout(UI_TIMEOUT_MS)
        self.base_url = base_url
        self.name = name
        self.folder = folder
        self.errors: list[str] = []  # uncaught errors of the frontend's scripts
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, path: str) -> None:
        """Go to a path of Home Assistant (e.g. `/lovelace/0`) and wait for the network."""
        self.page.goto(self.base_url + path)
        self.page.wait_for_load_state("networkidle")

    def call_action(self, domain: str, service: str, data: dict[str, Any]) -> str | None:
        """Perform an action through the frontend's own websocket connection (the logged-in
        person's token); return the error message it shows, or None if it was accepted."""
        message: str | None = self.page.evaluate(
            """async ([domain, service, data]) => {
              const hass = document.querySelector('home-assistant').hass;
              try { await hass.callService(domain, service, data); return null; }
              catch (err) { return err.message || JSON.stringify(err); }
            }""",
            [domain, service, data],
        )
        return message

    def login(self, user: str, password: str) -> None:
        """Log in through Home Assistant's login page; return on the first dashboard."""
        self.open("/")
        self.page.wait_for_url(re.compile(r"/auth/authorize"))
        self.page.locator("input[name='username']").fill(user)
        self.page.locator("input[name='password']").fill(password)
        self.page.get_by_role("button", name=re.compile("log in", re.IGNORECASE)).click()
        self.page.wait_for_url(re.compile(r"/lovelace"))
        self.page.wait_for_load_state("networkidle")

    def shows(self, text: str | re.Pattern[str]) -> None:
        """Assert that `text` is on screen (or scrolled into view), through shadow roots."""
        # The first visible match: a phone's closed sidebar drawer holds the same words.
        expect(self.page.get_by_text(text).locator("visible=true").first).to_be_visible()

    def visible_text(self) -> str:
        """Return the page's visible text, one line per text node, shadow roots included."""
        text: str = self.page.evaluate(_VISIBLE_TEXT_JS)
        return text

    def settle(self, milliseconds: int = 750) -> None:
        """Give animations and late state updates a moment before a screenshot."""
        self.page.wait_for_timeout(milliseconds)

    def screenshot(self, name: str, *, full_page: bool = False) -> Path:
        """Save `<folder>/<name>-<screen>.png` (and its visible text beside it, `.txt`)."""
        path = self.folder / f"{name}-{self.name}.png"
        self.page.screenshot(path=path, full_page=full_page)
        path.with_suffix(".txt").write_text(self.visible_text() + "\n")
        return path


@pytest.fixture
def screen(
    browser: Browser, demo_hass: DemoHass, artifacts: Path
) -> Iterator[Callable[[str], Screen]]:
    """Return a function that opens a new screen (`desktop` or `phone`); all close at the end."""
    contexts: list[BrowserContext] = []

    def open_screen(name: str) -> Screen:
        phone = name == "phone"
        context = browser.new_context(
            viewport=VIEWPORTS[name],
            device_scale_factor=2 if phone else 1,
            is_mobile=phone,
            has_touch=phone,
            locale="en-US",
            timezone_id="Asia/Shanghai",
        )
        contexts.append(context)
        return Screen(context, demo_hass.url, name, artifacts)

    yield open_screen
    for context in contexts:
        context.close()


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    """Say where the screenshots are."""
    if ARTIFACTS.is_dir() and any(ARTIFACTS.glob("*.png")):
        count = len(list(ARTIFACTS.glob("*.png")))
        terminalreporter.write_line(f"browser screenshots ({count}): {ARTIFACTS}")
