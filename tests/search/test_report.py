"""The study report: real studies, opened offline in headless Chromium.

Chromium is driven over its DevTools pipe (--remote-debugging-pipe: JSON messages ending in a
NUL byte on file descriptors 3 and 4), so no driver package or browser download is needed.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import optuna
import plotly.offline
import pytest
import ray

import launcher
from search.errors import InputError
from search.report import render, write_report
from search.storage import resolve_target
from tests.conftest import TINY_SPACE

CHROMIUM = Path("/usr/bin/chromium")
# No network: the report must not need one, and a test must not reach out.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe"]
VIEWPORT = {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
# Each plot once drawn: its traces that hold data, and plotly's SVG layers.
PLOTS_JS = """(async () => {
  await new Promise(done => requestAnimationFrame(() => setTimeout(done, 100)));
  const keys = ['x', 'y', 'z', 'dimensions', 'values'];
  return [...document.querySelectorAll('.plotly-graph-div')].map(div => ({
    section: div.closest('section').id,
    drawn: div.classList.contains('js-plotly-plot'),
    traces: (div.data || []).filter(t => keys.some(k => t[k] && t[k].length > 0)).length,
    svg: div.querySelectorAll('svg.main-svg').length,
  }));
})()"""


class Chromium:
    """Headless Chromium and its DevTools protocol, over a pair of pipes."""

    def __init__(self, profile: Path) -> None:
        commands_in, self._commands = os.pipe()
        self._answers, answers_out = os.pipe()

        def wire() -> None:  # in the child: the pipes become fds 3 and 4, as Chromium expects
            a = fcntl.fcntl(commands_in, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(answers_out, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.log = profile / "chromium.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile / 'user-data'}",
                 "about:blank"], pass_fds=(3, 4), preexec_fn=wire,
                stdout=subprocess.DEVNULL, stderr=log)
        os.close(commands_in)
        os.close(answers_out)
        self._buffer = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer; see {self.log}")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed its pipe; see {self.log}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") != self._last_id:
                self.events.append(answer)
            elif "error" in answer:
                raise RuntimeError(f"{method}: {answer['error']}")
            else:
                return answer["result"]

    def wait_for(self, event: str, session: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event and e.get("sessionId") == session
                      for e in self.events):
            self.events.append(self._receive(deadline))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError):  # it may close before answering
            self.call("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._answers)


def png_colours(data: bytes) -> int:
    """How many distinct colours an 8-bit RGB(A) PNG holds, decoded with zlib alone."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, header = 8, b"", None
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        at += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6)
    bpp = 3 if colour_type == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    previous, colours = bytearray(stride), set()
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = row[i - bpp] if i >= bpp else 0
            up, corner = previous[i], previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                row[i] = (row[i] + left) & 255
            elif kind == 2:
                row[i] = (row[i] + up) & 255
            elif kind == 3:
                row[i] = (row[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                row[i] = (row[i] + (left if pa <= pb and pa <= pc else up if pb <= pc
                                    else corner)) & 255
        colours.update(bytes(row[i:i + bpp]) for i in range(0, stride, bpp))
        previous = row
    return len(colours)


def open_report(browser: Chromium, page: Path) -> dict[str, Any]:
    """Load the report from file:// offline; what was drawn, logged and requested."""
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
            session)
        browser.call("Emulation.setDeviceMetricsOverride", VIEWPORT, session)
        browser.call("Page.navigate", {"url": page.as_uri()}, session)
        browser.wait_for("Page.loadEventFired", session)
        plots = browser.call("Runtime.evaluate", {
            "expression": PLOTS_JS, "awaitPromise": True, "returnByValue": True},
            session)["result"]["value"]
        text = browser.call("Runtime.evaluate", {
            "expression": "document.body.innerText", "returnByValue": True},
            session)["result"]["value"]
        shot = browser.call("Page.captureScreenshot", {"format": "png", "clip": {
            "x": 0, "y": 0, "width": VIEWPORT["width"], "height": VIEWPORT["height"],
            "scale": 0.5}}, session)
    finally:
        browser.call("Target.closeTarget", {"targetId": target})
    events = [e for e in browser.events if e.get("sessionId") == session]
    errors = [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"
              or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
              or (e["method"] == "Runtime.consoleAPICalled"
                  and e["params"]["type"] in ("error", "assert"))]
    requests = [e["params"]["request"]["url"] for e in events
                if e["method"] == "Network.requestWillBeSent"]
    return {"plots": plots, "text": text, "errors": errors, "requests": requests,
            "colours": png_colours(base64.b64decode(shot["data"]))}


def check_page(result: dict[str, Any]) -> None:
    """What every report must be in a browser: quiet, offline, drawn, visible."""
    assert result["errors"] == []
    assert result["requests"] and all(url.startswith(("file:", "data:", "blob:"))
                                      for url in result["requests"]), result["requests"]
    for plot in result["plots"]:
        assert plot["drawn"] and plot["traces"] > 0 and plot["svg"] > 0, plot
    # A page with text on it has far more than one colour, with anti-aliasing.
    assert result["colours"] > 16


def plotted_sections(result: dict[str, Any]) -> set[str]:
    return {plot["section"] for plot in result["plots"]}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    if not CHROMIUM.is_file():
        pytest.skip("no /usr/bin/chromium: apt-get install -y chromium to open the reports")
    chromium = Chromium(tmp_path_factory.mktemp("chromium"))
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> tuple[str, Path]:
    """The tiny search run once (complete, pruned and failed trials); the recipe profiles the
    layers of each completed trial's final evaluation."""
    studies = tmp_path_factory.mktemp("studies")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FTSEARCH_STUDIES", str(studies))
        try:
            assert launcher.main(["--space", str(TINY_SPACE), "--study", "tiny"]) == 0
        finally:
            ray.shutdown()
    return f"sqlite:///{studies / 'tiny' / 'optuna.db'}", studies


def varied_study(url: str) -> optuna.Study:
    """Three varied parameters and one fixed, a baseline and a recommended setting, trials
    pruned at step 10 and one failed after reporting: every plot has something to draw."""
    study = optuna.create_study(study_name="varied", storage=url,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names(["eval_loss"])
    study.enqueue_trial({"lr": 1e-3, "rank": 8, "optim": "adam"}, user_attrs={"baseline": True})
    study.enqueue_trial({"lr": 3e-3, "rank": 16, "optim": "adam"},
                        user_attrs={"recommended": True})

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        rank = trial.suggest_int("rank", 4, 32)
        optim = trial.suggest_categorical("optim", ["adam", "sgd"])
        trial.suggest_float("fixed", 0.5, 0.5)
        for step in (10, 20, 30):
            value = abs(lr - 3e-3) * 100 + 8 / rank + (optim == "sgd") + 10 / step
            trial.report(value, step)
            if trial.number % 3 == 2:
                raise optuna.TrialPruned()
        if trial.number == 4:
            raise RuntimeError("failed after reporting")
        return value

    study.optimize(objective, n_trials=12, catch=(RuntimeError,))
    return study


def multi_objective_study(url: str) -> optuna.Study:
    study = optuna.create_study(study_name="multi", storage=url,
                                directions=["minimize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1) ** 2 + t.suggest_float("y", 0, 1),
                              t.params["x"]), n_trials=15)
    return study


def failed_study(url: str) -> optuna.Study:
    study = optuna.create_study(study_name="failed", storage=url)

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        raise RuntimeError("always fails")

    study.optimize(objective, n_trials=3, catch=(RuntimeError,))
    return study


def single_trial_study(url: str) -> optuna.Study:
    study = optuna.create_study(study_name="single", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    return study


def empty_study(url: str) -> optuna.Study:
    return optuna.create_study(study_name="empty", storage=url)


# Per study: sections that must hold a plot, sections that must not, and text on the page.
CASES = {
    "empty": (set(), {"history", "curves", "timeline"},
              ["The study has no trials yet.", "0: 0 complete, 0 pruned, 0 failed"]),
    "failed": ({"timeline"}, {"history", "parallel", "importance"},
               ["No trial completed", "3: 0 complete, 0 pruned, 3 failed",
                "not measurable: no trial reported intermediate values"]),
    "single": ({"history", "timeline"}, {"parallel", "importance", "contour"},
               ["took different values among the complete trials", "no untuned reference"]),
    "varied": ({"history", "curves", "parallel", "importance", "slice", "contour", "timeline",
                "baseline"}, {"layers"},
               ["12: 7 complete, 4 pruned, 1 failed",
                # 7 complete trials ran 30 steps, 4 pruned ones 10: 250 of 11 x 30
                "250 steps run of 330", "24% of the compute saved",
                "every complete trial had the same value: fixed",
                "0 (baseline)", "1 (recommended)"]),
    "multi": ({"pareto", "history", "parallel", "importance", "slice", "contour", "timeline"},
              {"curves", "layers"}, ["objective 0 (minimize); objective 1 (maximize)",
                                     "trials on the Pareto front"]),
}
BUILDERS = {"empty": empty_study, "failed": failed_study, "single": single_trial_study,
            "varied": varied_study, "multi": multi_objective_study}


@pytest.mark.parametrize("name", list(CASES))
def test_report_of_studies_made_with_optuna(name, tmp_path, browser):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    BUILDERS[name](url)
    page = write_report(url, None, tmp_path / "report.html")
    result = open_report(browser, page)
    check_page(result)
    drawn, undrawn, phrases = CASES[name]
    assert drawn <= plotted_sections(result)
    assert not undrawn & plotted_sections(result)
    for phrase in phrases:
        assert phrase in result["text"], phrase


@pytest.mark.slow
def test_report_of_a_real_search(tiny_study, tmp_path, browser):
    url, _ = tiny_study
    page = write_report(url, "tiny", tmp_path / "tiny.html")
    result = open_report(browser, page)
    check_page(result)
    assert {"history", "curves", "timeline", "layers"} <= plotted_sections(result)
    text = result["text"]
    assert "5: 2 complete, 1 pruned, 2 failed, 0 running" in text
    assert "Early stopping" in text and "of the compute saved" in text
    # The best trial's final evaluation: 6 modules a pass, 120 test rows in 2 passes.
    assert "12 records from" in text
    # Bookkeeping attributes are not shown as metrics.
    assert "heartbeat" not in text
    # Both complete trials tried the same parameters: no importances, a note says why.
    assert "took different values among the complete trials" in text


@pytest.mark.slow
def test_report_is_one_self_contained_file(tiny_study, tmp_path):
    url, _ = tiny_study
    page = write_report(url, None, tmp_path / "nested" / "tiny.html").read_text()
    plotly_js = plotly.offline.get_plotlyjs()
    assert page.count(plotly_js) == 1
    # Outside plotly.js (whose map tiles and logo links are never fetched here): no script,
    # style, image or font from elsewhere, so it opens offline.
    rest = page.replace(plotly_js, "")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", rest, re.I)
    assert not re.search(r"""@import|url\(\s*["']?\s*(?:https?:)?//""", rest, re.I)
    assert "mathjax" not in rest.lower() and "<link" not in rest.lower()


def test_choosing_the_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}"
    empty_study(url)
    failed_study(url)
    # Two studies and none named: the error lists them.
    with pytest.raises(InputError, match="holds 2 studies \\(empty, failed\\); name one"):
        write_report(url, None, tmp_path / "r.html")
    with pytest.raises(InputError, match="no study named 'faild' \\(did you mean 'failed'"):
        write_report(url, "faild", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    assert write_report(url, "failed", tmp_path / "r.html").is_file()
    # A mistyped SQLite path is an error, not a new empty database.
    missing = tmp_path / "missing.db"
    with pytest.raises(InputError, match="no SQLite database file"):
        write_report(f"sqlite:///{missing}", None, tmp_path / "r.html")
    assert not missing.exists()
    with pytest.raises(InputError, match="unsupported storage URL") as error:
        write_report("ftp://user:secret@host/x", None, tmp_path / "r.html")
    assert "secret" not in str(error.value)


def test_passwords_in_the_storage_url_are_masked():
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    page = render(study, "postgresql://user:secret@db.example/optuna")
    assert "secret" not in page and "postgresql://user:***@db.example/optuna" in page


def test_a_bare_name_is_a_study_in_the_studies_folder(studies_dir):
    with pytest.raises(InputError, match="no study of that name"):
        resolve_target("tiny")
    (studies_dir / "tiny").mkdir(parents=True)
    empty_study(f"sqlite:///{studies_dir / 'tiny' / 'optuna.db'}")
    assert resolve_target("tiny") == (f"sqlite:///{studies_dir / 'tiny' / 'optuna.db'}", "tiny")
    assert resolve_target("sqlite:///x.db") == ("sqlite:///x.db", None)
    assert resolve_target("journal:x.log") == ("journal:x.log", None)
    with pytest.raises(InputError, match="neither a storage URL"):
        resolve_target("../tiny")
