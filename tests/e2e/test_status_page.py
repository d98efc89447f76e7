"""The status page at ``/`` in headless Chromium: first against a stub of the management API
(tests/statuspage_stub.py), then against ``replicator run`` streaming a real pipeline."""

from __future__ import annotations

import json
import re
import secrets
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.localserver import free_port, log_tail
from tests.statuspage_stub import STATIC, StatusStub, now_iso, pipeline_doc
from tests.support import (
    assert_same_rows,
    connect,
    execute,
    pipeline_dict,
    reap,
    spawn_run,
    table_rows,
    wait_caught_up,
    wait_for,
    write_config,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 30  # seconds: generous, the page polls every 1.5 s
TOKEN = "stub-token-0123456789abcdef"
HOSTILE = '<script>alert(1)</script><img src=x onerror="window.__injected = true">'
SPEC = json.loads((STATIC.parent / "openapi.json").read_text())


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium through Debian's chromedriver, its console log collected."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"the status page tests need {' and '.join(missing)}; "
            "install them with scripts/ensure-test-tools.sh (Debian chromium, chromium-driver)"
        )
    # Both paths are given, so Selenium Manager is never needed; offline, it cannot download.
    monkeypatch.setenv("SE_OFFLINE", "1")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the suite may run as root
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def stub() -> Iterator[StatusStub]:
    """The stub API with two pipelines: `shop` streaming (mid-snapshot), `audit` failed."""
    error = {"message": f"row rejected: {HOSTILE}", "kind": "SinkError", "at": now_iso()}
    older = {
        "message": "connection reset",
        "kind": "SourceError",
        "at": now_iso(),
        "retried": "read",
    }
    shop = pipeline_doc(
        "shop",
        lag_seconds=0.12,
        source_lag_bytes=3 * 1024 * 1024,
        snapshot=[
            {
                "table": "public.t",
                "state": "copying",
                "rows_copied": 2500,
                "rows_estimated": 10000,
                "rows_per_second": 500,
                "eta_seconds": 15,
            },
            {
                "table": "public.done",
                "state": "done",
                "rows_copied": 7,
                "rows_estimated": 7,
                "rows_per_second": None,
                "eta_seconds": None,
            },
        ],
    )
    audit = pipeline_doc(
        "audit",
        state="failed",
        source_type="mysql",
        lag_seconds=150.0,
        source_lag_bytes=5 * 1024**3,
        position=None,
        last_error=error,
        errors=[older, error],
    )
    with StatusStub([shop, audit], TOKEN) as server:
        yield server


def pipeline(driver: WebDriver, name: str) -> WebElement:
    """The card of pipeline ``name``."""
    return driver.find_element(By.CSS_SELECTOR, f'[data-pipeline="{name}"]')


def text_of(driver: WebDriver, name: str, selector: str) -> str:
    """The text of ``selector`` in pipeline ``name``'s card."""
    return pipeline(driver, name).find_element(By.CSS_SELECTOR, selector).text


def counter(driver: WebDriver, name: str, which: str) -> int:
    """A counter of pipeline ``name`` as the page shows it (e.g. ``1,234``)."""
    return int(text_of(driver, name, f".counters .{which}").replace(",", ""))


def samples(driver: WebDriver, name: str) -> list[dict[str, Any]]:
    """The chart's samples of pipeline ``name``, from the page's read-only hook."""
    found: list[dict[str, Any]] | None = driver.execute_script(
        "return (window.replicatorStatus.samples[arguments[0]] || null)", name
    )
    return found or []


def wait_page(driver: WebDriver, condition: Callable[[], object], what: str) -> None:
    """Wait (generously) until ``condition()`` is truthy."""
    WebDriverWait(driver, WAIT).until(lambda _: condition(), f"waiting for {what}")


def wait_state(driver: WebDriver, name: str, state: str) -> None:
    """Wait until pipeline ``name``'s badge shows ``state``."""
    wait_page(driver, lambda: text_of(driver, name, ".state").lower() == state, f"{name} {state}")


def click_with_token(driver: WebDriver, name: str, button: str, token: str) -> None:
    """Click Pause or Resume and answer the token prompt."""
    pipeline(driver, name).find_element(By.CSS_SELECTOR, f"button.{button}").click()
    dialog = driver.find_element(By.ID, "token-dialog")
    wait_page(driver, dialog.is_displayed, "the token prompt")
    field = driver.find_element(By.ID, "token-input")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "token-submit").click()
    wait_page(driver, lambda: not dialog.is_displayed(), "the token prompt to close")


def stored_tokens(driver: WebDriver) -> tuple[str | None, int]:
    """The token in sessionStorage, and how many localStorage entries there are."""
    token, local = driver.execute_script(
        "return [sessionStorage.getItem('replicator.apiToken'), localStorage.length]"
    )
    return token, local


def console_errors(driver: WebDriver, *expected: str) -> list[dict[str, Any]]:
    """SEVERE browser console entries, except failed requests whose text has an ``expected``
    part (the browser logs every refused connection and non-2xx answer it receives)."""
    return [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE"
        and not (entry["source"] == "network" and any(e in entry["message"] for e in expected))
    ]


def assert_no_alert(driver: WebDriver) -> None:
    """No alert() went off, and no injected handler ran."""
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - the access is the check
    assert driver.execute_script("return window.__injected === undefined")


def fetch(url: str, method: str = "GET", token: str | None = None) -> tuple[int, Any]:
    """One request to an API: its status and JSON body (HTTP errors returned, not raised)."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def assert_as_specified(route: str, method: str, status: int, body: Any) -> None:
    """``body`` is what openapi.json says ``method route`` answers with ``status``."""
    answer = SPEC["paths"][route][method.lower()]["responses"][str(status)]
    schema = answer["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": SPEC["components"]})


# -- against the stub ----------------------------------------------------------------------


def test_stub_answers_as_the_openapi_spec_says(stub: StatusStub):
    """The stub's every answer has the shape openapi.json gives the real API's, so the page
    is developed against what `replicator run` serves."""
    base = stub.url.rstrip("/")
    calls = [
        ("GET", "/pipelines", "/pipelines", None, 200),
        ("GET", "/pipelines/shop", "/pipelines/{name}", None, 200),
        ("GET", "/pipelines/nope", "/pipelines/{name}", None, 404),
        ("GET", "/health/live", "/health/live", None, 200),
        ("GET", "/health/ready", "/health/ready", None, 503),  # audit has failed
        ("POST", "/pipelines/shop/pause", "/pipelines/{name}/pause", None, 401),
        ("POST", "/pipelines/shop/pause", "/pipelines/{name}/pause", "wrong-token-0123456", 401),
        ("POST", "/pipelines/nope/pause", "/pipelines/{name}/pause", TOKEN, 404),
        ("POST", "/pipelines/audit/pause", "/pipelines/{name}/pause", TOKEN, 409),
        ("POST", "/pipelines/shop/pause", "/pipelines/{name}/pause", TOKEN, 200),
        ("GET", "/pipelines", "/pipelines", None, 200),  # the pause takes effect
        ("POST", "/pipelines/shop/resume", "/pipelines/{name}/resume", TOKEN, 200),
    ]
    for method, path, route, token, status in calls:
        got, body = fetch(base + path, method, token)
        assert got == status, (method, path, got, body)
        assert_as_specified(route, method, status, body)
    assert stub.pipelines["shop"]["state"] == "paused"
    assert fetch(base + "/pipelines")[1]["pipelines"][0]["state"] == "streaming"


def test_renders_each_pipeline_and_errors_as_plain_text(browser: WebDriver, stub: StatusStub):
    """Both pipelines render with state, lag, throughput, counters, chart and snapshot; a
    failed one's error message is shown as text, never run as markup."""
    browser.get(stub.url)
    wait_state(browser, "shop", "streaming")
    wait_state(browser, "audit", "failed")
    assert pipeline(browser, "audit").get_attribute("data-state") == "failed"
    red = pipeline(browser, "audit").find_element(By.CSS_SELECTOR, ".state")
    assert red.value_of_css_property("background-color") == "rgba(220, 38, 38, 1)"
    assert re.fullmatch(r"\d+ ms", text_of(browser, "shop", ".lag"))
    assert text_of(browser, "shop", ".source-lag") == "3.0 MiB"
    assert text_of(browser, "shop", ".position") == "0/16B3748"
    assert text_of(browser, "shop", ".throughput").endswith("events/s")
    assert text_of(browser, "audit", ".lag") == "2.5 min"
    assert text_of(browser, "audit", ".source-lag") == "5.0 GiB"
    assert text_of(browser, "audit", ".position") == "—"
    assert text_of(browser, "audit", ".route") == "mysql → postgres"

    first = counter(browser, "shop", "events")
    wait_page(browser, lambda: counter(browser, "shop", "events") > first, "events to grow")
    wait_page(browser, lambda: len(samples(browser, "shop")) >= 3, "three chart samples")
    assert all(s["eps"] is not None for s in samples(browser, "shop"))
    assert pipeline(browser, "shop").find_element(By.CSS_SELECTOR, "canvas.chart").size["width"]

    copying = pipeline(browser, "shop").find_element(
        By.CSS_SELECTOR, '.snapshot [data-table="public.t"]'
    )
    assert copying.find_element(By.TAG_NAME, "progress").get_attribute("value") == "0.25"
    assert "2,500 of ~10,000 rows" in copying.text and "ETA 15.0 s" in copying.text
    done = pipeline(browser, "shop").find_element(
        By.CSS_SELECTOR, '.snapshot [data-table="public.done"]'
    )
    assert done.get_attribute("data-state") == "done" and "ETA" not in done.text
    assert not pipeline(browser, "audit").find_element(By.CSS_SELECTOR, ".snapshot").is_displayed()

    errors = pipeline(browser, "audit").find_elements(By.CSS_SELECTOR, ".errors li")
    assert [e.find_element(By.CSS_SELECTOR, ".message").text for e in errors] == [
        f"row rejected: {HOSTILE}",  # newest first
        "connection reset",
    ]
    assert "SinkError" in errors[0].text
    card = pipeline(browser, "audit")
    assert not card.find_elements(By.CSS_SELECTOR, ".errors script, .errors img")
    assert_no_alert(browser)
    assert not pipeline(browser, "shop").find_element(By.CSS_SELECTOR, ".errors").is_displayed()

    readiness = browser.find_element(By.ID, "readiness")
    assert readiness.get_attribute("data-ready") == "false" and "audit" in readiness.text
    assert "pipeline is failed" in text_of(browser, "audit", ".not-ready")
    assert not browser.find_element(By.ID, "banner").is_displayed()
    # /health/ready answers 503 while a pipeline has failed: the only failed requests.
    assert console_errors(browser, "/health/ready - Failed to load resource") == []


def test_banner_shows_while_the_instance_is_unreachable(browser: WebDriver, stub: StatusStub):
    """When the API stops answering, a banner says so; the page retries and recovers."""
    browser.get(stub.url)
    wait_state(browser, "shop", "streaming")
    banner = browser.find_element(By.ID, "banner")
    assert not banner.is_displayed()
    stub.stop()
    wait_page(browser, banner.is_displayed, "the unreachable banner")
    assert "instance unreachable" in banner.text.lower()
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-reachable") == "false"
    polled = len(stub.requests)
    stub.start()  # same port
    wait_page(browser, lambda: not banner.is_displayed(), "the banner to go")
    assert len(stub.requests) > polled
    first = counter(browser, "shop", "events")
    wait_page(browser, lambda: counter(browser, "shop", "events") > first, "events to grow")
    assert console_errors(browser, "net::ERR_CONNECTION_REFUSED", "/health/ready") == []


def test_pause_asks_for_the_token_and_reports_a_refusal(browser: WebDriver, stub: StatusStub):
    """A wrong token gets the API's 401 message; the right one pauses and resumes, sent only
    as a bearer header and kept in sessionStorage."""
    browser.get(stub.url)
    wait_state(browser, "shop", "streaming")
    assert not pipeline(browser, "shop").find_element(By.CSS_SELECTOR, "button.resume").is_enabled()
    assert not pipeline(browser, "audit").find_element(By.CSS_SELECTOR, "button.pause").is_enabled()

    click_with_token(browser, "shop", "pause", "not-the-token-at-all")
    message = pipeline(browser, "shop").find_element(By.CSS_SELECTOR, ".action-message")
    wait_page(browser, lambda: "401" in message.text, "the refusal")
    assert "missing or wrong API token" in message.text
    assert "Authorization: Bearer <token>" in message.text  # the API's fix, as text
    assert text_of(browser, "shop", ".state").lower() == "streaming"
    assert stored_tokens(browser) == (None, 0)  # a refused token is forgotten

    click_with_token(browser, "shop", "pause", TOKEN)  # asks again
    wait_state(browser, "shop", "paused")
    amber = pipeline(browser, "shop").find_element(By.CSS_SELECTOR, ".state")
    assert amber.value_of_css_property("background-color") == "rgba(245, 158, 11, 1)"
    assert "Paused" in message.text
    assert stored_tokens(browser) == (TOKEN, 0)
    assert stub.pipelines["shop"]["state"] == "paused"

    # The token is kept for the tab: resuming does not ask again.
    pipeline(browser, "shop").find_element(By.CSS_SELECTOR, "button.resume").click()
    wait_state(browser, "shop", "streaming")
    assert not browser.find_element(By.ID, "token-dialog").is_displayed()
    posts = [(path, auth) for method, path, auth in stub.requests if method == "POST"]
    assert posts == [
        ("/pipelines/shop/pause", "Bearer not-the-token-at-all"),
        ("/pipelines/shop/pause", f"Bearer {TOKEN}"),
        ("/pipelines/shop/resume", f"Bearer {TOKEN}"),
    ]
    assert not any(TOKEN in path for _, path, _ in stub.requests)
    assert browser.current_url == stub.url
    expected = ("/pipelines/shop/pause - Failed to load resource", "/health/ready")
    assert console_errors(browser, *expected) == []


# -- against `replicator run` --------------------------------------------------------------


class Inserter:
    """Inserts rows into ``t`` on the source from a thread, one per transaction, until stopped."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.inserted = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with connect(self.dsn) as conn:
                while not self._stop.wait(0.02):
                    conn.execute("INSERT INTO t (v) VALUES (%s)", (f"row {self.inserted}",))
                    self.inserted += 1
        except BaseException as exc:  # noqa: BLE001 - raised by stop()
            self.error = exc

    def stop(self) -> None:
        """Stop inserting, and raise what the thread failed with."""
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error


def api_live(base: str) -> bool:
    """Whether the API answers ``GET /health/live`` with 200."""
    try:
        with urllib.request.urlopen(f"{base}health/live", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_page_follows_pause_and_resume_of_a_running_pipeline(
    browser: WebDriver,
    source_dsn: str,
    target_dsn: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    """Against `replicator run`: the page shows the pipeline streaming with growing counters
    and a chart; its Pause button stops rows reaching the target, Resume catches up exactly."""
    execute(
        source_dsn, "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)"
    )
    token = secrets.token_hex(16)
    monkeypatch.setenv("REPLICATOR_API_TOKEN", token)  # inherited by the spawned engine
    base = f"http://127.0.0.1:{free_port()}/"
    config = write_config(
        tmp_path / "c.yaml",
        pipeline_dict("shop", source_dsn, target_dsn),
        api={
            "listen": base.removeprefix("http://").rstrip("/"),
            "token_env": "REPLICATOR_API_TOKEN",
        },
    )
    log = tmp_path / "run.log"
    engine = spawn_run(config, log)
    inserter: Inserter | None = None
    try:
        wait_for(lambda: api_live(base) or engine.poll() is not None, 60, "the API")
        assert engine.poll() is None, log_tail(log)
        browser.get(base)
        wait_state(browser, "shop", "streaming")
        inserter = Inserter(source_dsn)
        wait_page(browser, lambda: counter(browser, "shop", "events") > 0, "events")
        first = counter(browser, "shop", "events")
        wait_page(browser, lambda: counter(browser, "shop", "events") > first, "events to grow")
        wait_page(browser, lambda: len(samples(browser, "shop")) >= 3, "three chart samples")
        assert re.fullmatch(r"[0-9A-F]+/[0-9A-F]+", text_of(browser, "shop", ".position"))
        assert re.fullmatch(r"[\d.]+ (ms|s|min|h)", text_of(browser, "shop", ".lag"))

        click_with_token(browser, "shop", "pause", token)
        wait_state(browser, "shop", "paused")
        assert stored_tokens(browser) == (token, 0)
        held = len(table_rows(target_dsn, "t"))
        more = inserter.inserted + 100
        wait_for(lambda: inserter.inserted >= more, 30, "more rows in the source")
        assert len(table_rows(target_dsn, "t")) == held, "rows arrived while paused"
        assert text_of(browser, "shop", ".state").lower() == "paused"

        pipeline(browser, "shop").find_element(By.CSS_SELECTOR, "button.resume").click()
        wait_state(browser, "shop", "streaming")
        wait_for(lambda: len(table_rows(target_dsn, "t")) > held, 30, "rows after resuming")
        inserter.stop()
        inserter = None
        wait_caught_up(source_dsn, target_dsn, "shop")
        assert_same_rows(source_dsn, target_dsn, "t")
        # /health/ready answers 503 until the pipeline is connected: no other failed request.
        assert console_errors(browser, "/health/ready - Failed to load resource: the server") == []
        engine.send_signal(signal.SIGTERM)
        assert engine.wait(30) == 0, log_tail(log)
    except BaseException:
        print(log_tail(log))  # shown by pytest with the failure
        raise
    finally:
        if inserter is not None:
            inserter.stop()
        reap(engine)
