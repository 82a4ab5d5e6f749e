"""The HTML report in a real browser: headless Chromium, network off, every plot drawn, no console errors.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (fds 3 and 4, JSON
messages separated by NUL bytes), so the test needs no websocket library and sees console levels,
uncaught exceptions, failed loads and every network request the page attempts.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dnprof.cli import main
from report_fixtures import EVIL_GPU, write_fixture_results

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"needs {CHROMIUM} (Debian: apt-get install -y chromium) to render the report"),
]

#: Resolves once every plotly div holds drawn SVG, or after 15 s with what is there.
_WAIT_FOR_PLOTS = """
new Promise(resolve => {
  const t0 = Date.now();
  const check = () => {
    const divs = [...document.querySelectorAll('div.plotly-graph-div')];
    const state = divs.map(d => ({id: d.id, svg: d.querySelectorAll('svg.main-svg').length,
                                  traces: d.querySelectorAll('g.trace, g.hm, g.boxlayer path').length}));
    if ((divs.length && state.every(s => s.svg > 0 && s.traces > 0)) || Date.now() - t0 > 15000) {
      resolve({plots: state, text: document.body.innerText, scripts: document.scripts.length,
               plotlyVersion: window.Plotly ? window.Plotly.version : null});
    } else { setTimeout(check, 100); }
  };
  check();
})
"""


class DevTools:
    """A minimal DevTools-protocol client for a headless Chromium started with --remote-debugging-pipe."""

    def __init__(self, user_data_dir: Path, width: int = 1400, height: int = 900):
        cmd_r, self._cmd_w = os.pipe()
        self._evt_r, evt_w = os.pipe()

        def to_fds_3_and_4() -> None:  # runs in the child before exec: Chromium reads fd 3, writes fd 4
            a = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(evt_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
                # Network off: every request not for a file goes to a dead proxy.
                "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
                f"--window-size={width},{height}", f"--user-data-dir={user_data_dir}",
                "--remote-debugging-pipe", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=to_fds_3_and_4, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(evt_w)
        self._next_id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._inbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        """Split the event pipe into JSON messages."""
        buf = b""
        while True:
            chunk = os.read(self._evt_r, 1 << 20)
            if not chunk:
                self._inbox.put(None)
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                self._inbox.put(json.loads(raw))

    def _pump(self, timeout: float) -> None:
        """Take one message off the pipe into replies or events."""
        msg = self._inbox.get(timeout=timeout)
        if msg is None:
            raise RuntimeError("Chromium closed the DevTools pipe")
        if "id" in msg:
            self._replies[msg["id"]] = msg
        else:
            self.events.append(msg)

    def send(self, method: str, session: str | None = None, timeout: float = 30, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply."""
        self._next_id += 1
        mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while mid not in self._replies:
            self._pump(max(0.01, deadline - time.monotonic()))
        reply = self._replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def wait_event(self, method: str, timeout: float = 30) -> dict[str, Any]:
        """Wait for the first event named ``method`` (already received or still to come)."""
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev.get("method") == method:
                    return ev
            self._pump(max(0.01, deadline - time.monotonic()))

    def close(self) -> None:
        """Ask the browser to quit, then make sure it has."""
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)


def _problems(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Console errors (console.error, uncaught exceptions, error log entries) and network requests seen."""
    errors, requests = [], []
    for ev in events:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                   for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append("uncaught: " + str(d.get("exception", {}).get("description", d.get("text"))))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append("log: " + p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
        elif method == "Page.javascriptDialogOpening":
            errors.append("dialog opened: " + p.get("message", ""))
        elif method == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if not url.startswith(("file:", "data:", "about:", "blob:")):
                requests.append(url)
    return errors, requests


def test_report_renders_every_plot_offline_without_console_errors(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_fixture_results(results)
    report = tmp_path / "report.html"
    out = CliRunner().invoke(main, ["report", str(results), "-o", str(report)])
    assert out.exit_code == 0, out.output

    browser = DevTools(tmp_path / "chromium-profile")
    try:
        targets = browser.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session = browser.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session)
        browser.send("Emulation.setDeviceMetricsOverride", session, width=1400, height=900, deviceScaleFactor=1,
                     mobile=False)
        browser.send("Page.navigate", session, url=report.resolve().as_uri())
        browser.wait_event("Page.loadEventFired", timeout=40)
        state = browser.send("Runtime.evaluate", session, timeout=40, expression=_WAIT_FOR_PLOTS,
                             awaitPromise=True, returnByValue=True)["result"]["value"]
        shot = browser.send("Page.captureScreenshot", session, format="png")
        screenshot = tmp_path / "report-first-screen.png"
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        print(f"screenshot of the report's first screen: {screenshot}")
        time.sleep(0.2)  # let late console messages arrive
        while not browser._inbox.empty():
            browser._pump(0.1)
    finally:
        browser.close()

    assert state["plotlyVersion"], "plotly.js did not load from the page itself"
    plots = {p["id"]: p for p in state["plots"]}
    assert set(plots) == {"fig-throughput", "fig-speedup", "fig-memory", "fig-chunk-size", "fig-roofline",
                          "fig-tuning-spread", "fig-tuning-heatmap"}
    undrawn = [pid for pid, p in plots.items() if not (p["svg"] > 0 and p["traces"] > 0)]
    assert not undrawn, f"plots without drawn SVG: {undrawn}"
    errors, requests = _problems(browser.events)
    assert not errors, f"console errors: {errors}"
    assert not requests, f"the page tried the network: {requests}"
    # The dangerous GPU name shows as text and never ran.
    assert EVIL_GPU in state["text"]
    assert screenshot.stat().st_size > 10_000
