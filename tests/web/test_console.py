"""The console in a real browser: Playwright drives Debian's Chromium against a real server and worker.

``UPDATE_SCREENSHOTS=1`` writes each page's screenshot into docs/ (otherwise into the test's tmp dir).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import wait_until
from tests.web.conftest import ROOT
from tests.web.test_api import wait_for_state

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make setup installs it)")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Debian's Chromium, never a downloaded one; root in a container needs --no-sandbox.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser, server) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """A signed-in console tab at laptop size."""
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    tab.goto("/login?next=/")
    tab.fill("input[name=token]", server.token)
    tab.click("form.login button")
    tab.wait_for_url(f"{server.url}/")
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    return ROOT / "docs" if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path


def screenshot(page: Any, folder: Path, name: str) -> Path:
    """A full-page PNG cut down to 64 colours: a few tens of KB, fine for docs."""
    import sysconfig

    from PIL import Image

    path = folder / f"web-{name}.png"
    # Tracebacks name this checkout's and the interpreter's folders: shorten them for the docs.
    prefixes = {sysconfig.get_paths()["purelib"] + "/": "site-packages/", str(ROOT) + "/": ""}
    page.evaluate(
        """prefixes => document.querySelectorAll("pre, code").forEach(node => {
            for (const [long, short] of Object.entries(prefixes))
                node.textContent = node.textContent.split(long).join(short);
        })""",
        prefixes,
    )
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    with Image.open(path) as image:
        image.convert("RGB").quantize(colors=64).save(path, optimize=True)
    assert path.stat().st_size < 300_000
    return path


def submit(api: httpx.Client, actor: str, *args: Any, **options: Any) -> str:
    response = api.post("/api/v1/jobs", json={"actor": actor, "args": list(args), "options": options})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def test_the_overview_shows_queues_workers_and_the_last_hours_failures(page, api, worker, shots):
    # Given a job that failed and one that succeeded
    failed = submit(api, "reject", "the file is not a PDF")
    wait_for_state(api, failed, "failed")
    wait_for_state(api, submit(api, "add", 1, 2), "succeeded")
    wait_until(lambda: api.get("/api/v1/workers").json(), timeout=20)

    # When the operator opens the overview
    page.goto("/")

    # Then it lists every queue, this worker, and the failure
    assert page.locator("#queues tr").count() == 1 + 9
    assert str(os.getpid()) in page.inner_text("#workers")
    assert failed[:8] in page.inner_text("#failures")
    screenshot(page, shots, "overview")


def test_jobs_are_filtered_and_a_failed_jobs_traceback_opens(page, api, worker, shots):
    # Given successes and a failure
    for index in range(3):
        submit(api, "add", index, index)
    failed = submit(api, "reject", "page 3 is unreadable")
    wait_for_state(api, failed, "failed")

    # When the operator filters the jobs list to failed jobs of that actor
    page.goto("/jobs")
    page.select_option("select[name=state]", "failed")
    page.fill("input[name=actor]", "reject")
    page.click("#filters button")
    page.wait_for_url("**/jobs?state=failed*")

    # Then only failed jobs of it are listed
    rows = page.locator("#jobs tr").all()[1:]
    assert rows and all("failed" in row.inner_text() and "reject" in row.inner_text() for row in rows)
    screenshot(page, shots, "jobs")

    # And opening the failure shows its reason and traceback
    page.click(f"a[href='/jobs/{failed}']")
    page.wait_for_url(f"**/jobs/{failed}")
    assert "InvalidArgument: page 3 is unreadable" in page.inner_text("#job-error")
    assert page.locator("#traceback").is_visible()
    assert "raise InvalidArgument(reason)" in page.inner_text("#traceback pre")
    screenshot(page, shots, "job-failed")


def test_a_dead_letter_is_replayed_from_the_console_and_succeeds(page, api, worker, redis_client, shots):
    # Given a job that went dead, whose cause is then fixed
    key = f"web:{uuid.uuid4().hex}"
    dead = submit(api, "fails_until_fixed", key)
    wait_for_state(api, dead, "dead")
    wait_until(lambda: dead in [d["message_id"] for d in api.get("/api/v1/dead-letters").json()], timeout=10)

    # And its page lists both failed attempts, each with its traceback
    page.goto(f"/jobs/{dead}")
    rows = page.locator("#attempts tbody tr")
    assert rows.count() == 2
    assert [rows.nth(i).locator("td").first.inner_text() for i in range(2)] == ["1", "2"]
    assert "dead" in rows.nth(1).inner_text() and rows.nth(0).locator("details pre").count() == 1
    redis_client.set(f"{key}:fixed", 1)

    # When the operator replays it from the dead letters page
    page.goto("/dead-letters")
    row = page.locator(f"#dead-letters tr[data-id='{dead}']")
    assert "fails_until_fixed" in row.inner_text()
    screenshot(page, shots, "dead-letters")
    row.locator("button", has_text="Replay").click()

    # Then the console opens the new job, which ends succeeded, and says where it came from
    page.wait_for_url("**/jobs/*?notice=*")
    assert f"replayed {dead} as" in page.inner_text(".notice")
    page.wait_for_function("document.querySelector('#job-state').innerText.includes('succeeded')")
    fresh = page.url.split("/jobs/", 1)[1].split("?", 1)[0]
    assert api.get(f"/api/v1/jobs/{fresh}").json()["parent_id"] == dead


def test_a_running_jobs_progress_moves_without_a_reload(page, api, worker, redis_client, shots):
    # Given a job that advances one step each time the test allows it
    key = f"web:{uuid.uuid4().hex}"
    job_id = submit(api, "steps", key, 4)
    wait_for_state(api, job_id, "running")

    # When the operator watches its page
    page.goto(f"/jobs/{job_id}")
    page.evaluate("window.sameDocument = true")

    # Then each step shows up in place: the bar and the note move, and the page never reloads
    for step in range(1, 5):
        redis_client.set(f"{key}:go", step)
        page.wait_for_function(f"document.querySelector('#job-progress').innerText === '{25 * step}%'")
        assert f"step {step} of 4" in page.inner_text("#job-note")
        if step == 2:
            screenshot(page, shots, "job-running")
    page.wait_for_function("document.querySelector('#job-state').innerText.includes('succeeded')")
    assert page.evaluate("window.sameDocument") is True


def test_a_queued_job_is_cancelled_from_its_page(page, api, worker):
    # Given a job waiting for its delay
    job_id = submit(api, "add", 2, 2, delay=2_000)

    # When the operator presses Cancel on its page
    page.goto(f"/jobs/{job_id}")
    page.click("button:has-text('Cancel')")

    # Then the page says the job will not run, and once its worker takes it, it is cancelled, never started
    page.wait_for_url(f"**/jobs/{job_id}?notice=*")
    notice = page.inner_text(".notice")
    assert "cancelled: it will not run" in notice or "cancel requested" in notice
    wait_until(lambda: api.get(f"/api/v1/jobs/{job_id}").json()["state"] == "cancelled", timeout=60)
    assert api.get(f"/api/v1/jobs/{job_id}").json()["started_at"] is None
    page.goto(f"/jobs/{job_id}")
    assert "cancelled" in page.inner_text("#job-state")


def test_the_schedules_and_workers_pages_list_what_runs(page, api, worker, shots):
    # When the operator opens the schedules and the workers
    page.goto("/schedules")
    schedules = page.inner_text("#schedules")
    screenshot(page, shots, "schedules")
    wait_until(lambda: api.get("/api/v1/workers").json(), timeout=20)
    page.goto("/workers")

    # Then periodic actors show with their cron, and this process's worker is alive
    assert "health_check" in schedules and "backup_database" in schedules
    assert str(os.getpid()) in page.inner_text("#workers") and "alive" in page.inner_text("#workers")
    screenshot(page, shots, "workers")
