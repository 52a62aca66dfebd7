"""The Dagster UI in a real browser: Debian's headless Chromium, driven by Playwright.

The shared sample pipeline records its runs and asset-check results in a Dagster instance in its home;
`dagster-webserver` serves that instance on loopback, and the browser checks that the asset graph shows
the assets and that the blocking Great Expectations check shows as passed.

The asset graph's screenshot is written to the test's tmp folder; with GROUNDWORK_UPDATE_SCREENSHOTS=1
it also replaces docs/asset-graph.png (the one the README shows).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PipelineRuns
from playwright.sync_api import Page, expect, sync_playwright

from resources.settings import PROJECT_ROOT

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
DOCUMENTS = ["policies/return-policy.md", "policies/shipping-policy.md", "faq/gift-cards.md"]
GROUPS = ["bronze", "embeddings", "gold", "silver"]
DOCUMENT_ASSETS = ["bronze_documents", "silver_documents", "document_chunks", "chunk_embeddings"]
SCREENSHOT = PROJECT_ROOT / "docs" / "asset-graph.png"
VIEWPORT = {"width": 1600, "height": 1000}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (install Debian's chromium: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def dagster_ui(sample_pipeline: PipelineRuns, chromium) -> Iterator[str]:
    """Base URL of a dagster-webserver serving the instance that recorded the sample pipeline's runs."""
    settings = sample_pipeline.settings
    env = {
        **os.environ,
        "GROUNDWORK_HOME": str(settings.home),
        "GROUNDWORK_SPARK_MASTER": "local[2]",
        "DAGSTER_HOME": str(settings.dagster_home),
    }
    port = _free_port()
    log = Path(tempfile.mkdtemp(prefix="ui-")) / "webserver.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [BIN / "dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, f"dagster-webserver exited:\n{_tail(log)}"
                assert time.monotonic() < deadline, f"no webserver answer in 120 s:\n{_tail(log)}"
                time.sleep(1)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@pytest.fixture
def page(chromium: Path) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), headless=True, args=["--no-sandbox"]
        )
        try:
            context = browser.new_context(viewport=VIEWPORT)
            # Dagster asks first-time visitors to join its community in a modal; mark it as seen, and
            # start with the left navigation collapsed so the graph gets the room.
            context.add_init_script(
                "localStorage.setItem('communityNux', '\"1\"');"
                "localStorage.setItem('dagster-nav-collapsed', 'true');"
            )
            context.set_default_timeout(60_000)
            yield context.new_page()
        finally:
            browser.close()


def _fits(page: Page, names: list[str]) -> bool:
    """Whether the named asset nodes' titles lie well inside the graph's pane (below the toolbar)."""
    # "Materialize all", or "Materialize all…" when the selection holds partitioned assets (a dialog follows).
    toolbar = page.get_by_role("button", name=re.compile(r"Materialize all")).first.bounding_box()
    top = (toolbar["y"] + toolbar["height"] if toolbar else 0) + 40  # room for a group's header
    for name in names:
        box = page.get_by_text(name, exact=True).first.bounding_box()
        if box is None or box["y"] < top or box["y"] + box["height"] > VIEWPORT["height"] - 150:
            return False
    return True


def test_asset_graph_and_check_results_render(dagster_ui: str, page: Page, tmp_path):
    # The global asset lineage, every group expanded (the URL the UI itself writes for "Expand all groups").
    expanded = ",".join(f"global@global:{group}" for group in GROUPS)
    page.goto(f"{dagster_ui}/asset-groups/?expanded={expanded}")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    for name in DOCUMENT_ASSETS:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("silver_customers", exact=True).first).to_be_visible()

    # For the screenshot: hide the asset tree beside the graph and zoom out until the graph fits.
    page.locator("button:has([aria-label='panel_show_right'])").last.click()
    zoom_out = page.locator("button:has([aria-label='zoom_out'])").first
    corners = ["bronze_documents", "silver_products", "chunk_embeddings"]
    for _ in range(8):
        page.wait_for_timeout(800)  # the zoom animates
        if _fits(page, corners):
            break
        zoom_out.click()
    shot = tmp_path / "asset-graph.png"
    page.screenshot(path=shot, full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("GROUNDWORK_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(shot, SCREENSHOT)

    # The blocking Great Expectations check on the gold table ran and passed.
    page.goto(f"{dagster_ui}/assets/document_chunks?view=checks")
    expect(page.get_by_text("document_chunks_expectations", exact=True).first).to_be_visible()
    expect(page.get_by_text("This is a blocking asset check.")).to_be_visible()
    expect(page.get_by_text("Succeeded", exact=True).first).to_be_visible()
    expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
    page.screenshot(path=tmp_path / "document-chunks-checks.png", full_page=True)
