"""The review page end to end in a real headless browser (Debian's Chromium driven by
Playwright): a real agent with HTTP on, a scan that needs a person, the page lists it with its
plot and Top-5, a chemist confirms a candidate, and a real ZeroMQ subscriber receives the
``xrd.review``. With XRD_AGENT_SCREENSHOTS=1 the run also refreshes docs/figures/review-page.png
(the README's picture); otherwise it leaves the working tree as it was."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium: install Debian's chromium (scripts/bootstrap.sh does, as root)",
                allow_module_level=True)
pytest.importorskip("fastapi", reason="the review page needs the `http` extra (fastapi, uvicorn)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (dev extra)")

from xrd_agent import messages  # noqa: E402
from xrd_agent.library.artifact import Library  # noqa: E402
from xrd_agent.testing.agent import AgentProcess, agent_config, write_config  # noqa: E402
from xrd_agent.testing.capture import Capture  # noqa: E402
from xrd_agent.testing.library import save_tiny_library  # noqa: E402
from xrd_agent.testing.simulated_d8 import SimulatedD8  # noqa: E402

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "figures" / "review-page.png"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_a_chemist_confirms_a_result_and_the_robot_hears_it(tmp_path):
    library_dir = save_tiny_library(tmp_path / "tiny")
    export = tmp_path / "export"
    export.mkdir()
    settings = agent_config(tmp_path, model={"engine": "cosine", "library_dir": str(library_dir)},
                            watch={"mode": "polling"}, http={"enabled": True, "port": 0})
    agent = AgentProcess(write_config(tmp_path / "agent.toml", settings), tmp_path / "state")
    d8 = SimulatedD8(export, Library.load(library_dir), seed=4)
    with agent:
        agent.start()
        url = agent.endpoints["http"]
        with Capture(agent.pub, agent.control, since_seq=0) as robot:
            # a two-phase product: the Top-5 is uncertain, so it waits for a person
            d8.export("R-7.xy", d8.measure("R-7", ["TSTMOF02", "TSTMOF09"], weights=[0.6, 0.4]))
            d8.export("R-8.xy", d8.measure("R-8", kind="amorphous"))
            idents = robot.wait_for(lambda ev: len([e for e in ev if e.topic == messages.IDENTIFICATION]) >= 2,
                                    timeout=60)
            r7 = next(e for e in idents if e.topic == messages.IDENTIFICATION and e.sample_id == "R-7")
            with sync_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1100, "height": 900})
                    page.goto(f"{url}/review")
                    card = page.locator(f"#card-{r7.seq}")
                    card.wait_for()
                    assert card.locator(".sample").inner_text() == "R-7"
                    assert "needs review" in card.locator(".why").inner_text()
                    assert card.locator("tr").count() == 1 + len(r7.top)  # header + the Top-5
                    card.locator("img").evaluate("img => img.decode()")  # the plot loaded
                    assert card.locator("img").evaluate("img => img.naturalWidth") > 100
                    assert page.locator("#card-" + str(r7.seq + 99)).count() == 0
                    page.fill("#reviewer", "AK")
                    second = r7.top[1].refcode
                    card.locator(f"input[value='{second}']").check()
                    card.locator("button.confirm").click()
                    card.locator(".msg", has_text="Recorded as xrd.review").wait_for()
                    message = card.locator(".msg").inner_text()
                    page.evaluate("window.scrollTo(0, 0)")
                    page.screenshot(path=str(tmp_path / "review-page.png"), full_page=True)
                finally:
                    browser.close()
            events = robot.wait_for(lambda ev: any(e.topic == messages.REVIEW for e in ev), timeout=30)
        review = next(e for e in events if e.topic == messages.REVIEW)
        assert review.of_seq == r7.seq and review.decision == "corrected" and review.refcode == second
        assert review.reviewer == "AK" and f"#{review.seq}" in message
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs))  # the review took its place in the one seq order
        agent.stop()
    assert (tmp_path / "review-page.png").stat().st_size > 10_000
    if os.environ.get("XRD_AGENT_SCREENSHOTS"):  # refresh the README's picture on purpose only
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "review-page.png", SCREENSHOT)
