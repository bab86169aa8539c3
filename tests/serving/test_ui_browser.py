"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright; no browser download).

Sign in, approve a correction and see it leave the queue, see each plot drawn with its data points, promote and
roll back, an employee gets no admin page and the server refuses their admin posts, a form without its CSRF token
is refused, and a running cycle's progress appears without a reload. Each page is captured into docs/ui/ for the
README. Without chromium these tests fail under CI and are skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, RunningService, issue_token, make_settings
from tests.serving.ui_support import (
    ADMIN,
    EMPLOYEE,
    REVIEWER,
    finish_run,
    model_server_stand_in,
    seed,
    set_progress,
    start_running_run,
)

CHROMIUM = Path(os.environ.get("TUNELOOP_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO / "docs" / "ui"
# Never fires during a test run (3:00 on January 1st), but gives the overview a next scheduled cycle to show.
RARE_CRON = "0 3 1 1 *"


def _no_browser(reason: str) -> None:
    message = f"the browser tests need chromium: {reason} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file() and shutil.which("chromium") is None:
        _no_browser(f"{CHROMIUM} is missing")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:  # the dev extra is not installed
        _no_browser(f"playwright is not installed ({error})")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM if CHROMIUM.is_file() else shutil.which("chromium")),
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield launched
        launched.close()


class World:
    def __init__(self, running: RunningService, ids: dict[str, Any], browser: Any) -> None:
        self.running = running
        self.ids = ids
        self.url = running.url
        self.engine = running.service.services.engine
        self._browser = browser
        self._contexts: list[Any] = []

    def signed_in(self, user: str) -> Any:
        """A browser page signed in as `user` through the sign-in form."""
        from playwright.sync_api import expect

        context = self._browser.new_context(viewport={"width": 1280, "height": 900})
        self._contexts.append(context)
        page = context.new_page()
        page.goto(f"{self.url}/ui")
        expect(page).to_have_url(f"{self.url}/ui/signin?next=%2Fui")
        page.fill("#token", issue_token(self.running, user))
        page.click("#signin button[type=submit]")
        expect(page.locator(".who")).to_contain_text(user)
        return page

    def close(self) -> None:
        for context in self._contexts:
            context.close()


@pytest.fixture
def world(tmp_path: Path, browser: Any) -> Iterator[World]:
    with model_server_stand_in() as url:
        settings = make_settings(
            tmp_path,
            base_model_dir=tmp_path / "no-model",
            vllm_url=url,
            training={"nightly_enabled": True, "nightly_cron": RARE_CRON},
        )
        running = RunningService(settings)
        ids = seed(running.service.services.engine, tmp_path / "adapters")
        running.start()
        made = World(running, ids, browser)
        yield made
        made.close()
        running.stop()


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _chart(page: Any, name: str) -> Any:
    return page.locator(f'figure.chart[data-chart="{name}"] svg')


def test_every_page_renders_its_plots_with_data_points(world: World) -> None:
    from playwright.sync_api import expect

    anonymous = world._browser.new_page(viewport={"width": 1280, "height": 600})
    anonymous.goto(f"{world.url}/ui/signin")
    _shot(anonymous, "signin")
    anonymous.close()

    page = world.signed_in(ADMIN)
    expect(page.locator("#active-version")).to_have_text("v0002")
    expect(page.locator("#pending-count")).to_have_text("2")
    expect(page.locator(".tile", has_text="Next scheduled cycle")).to_contain_text("-01-01 ")
    # A bar per day of the fortnight that had answers (ten days seeded), and a stacked pair per version.
    expect(_chart(page, "answers-per-day").locator("rect.rect")).to_have_count(14)
    answers_heights = (
        _chart(page, "answers-per-day")
        .locator("rect.rect")
        .evaluate_all("bars => bars.filter(b => b.getBBox().height > 0).length")
    )
    assert answers_heights == 10
    expect(_chart(page, "votes-per-version").locator("rect.rect")).to_have_count(6)  # up, down: base, v0001, v0002
    _shot(page, "overview")

    page.click("nav >> text=Versions & runs")
    # 12 + 16 logged steps of two runs; three gate series over the two gated versions.
    expect(_chart(page, "loss").locator("circle.dot")).to_have_count(28)
    expect(_chart(page, "gate").locator("circle.dot")).to_have_count(6)
    expect(page.locator("#samples .sample")).to_have_count(2)
    expect(page.locator("#samples .pair").first).to_contain_text("It is at vpn.example.com/config.")
    expect(page.locator("#datasets")).to_contain_text("sft_corrections")
    _shot(page, "versions")

    page.click("nav >> text=Review")
    expect(page.locator("article.correction")).to_have_count(2)
    _shot(page, "review")
    page.click("nav >> text=Feedback")
    expect(page.locator("#interactions tbody tr")).to_have_count(25)
    _shot(page, "feedback")
    page.fill("input[name=q]", "VPN config")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#interactions tbody tr")).to_have_count(1)
    expect(page.locator("#interactions")).to_contain_text("It is at vpn.example.com/config.")
    page.click("nav >> text=Audit")
    expect(page.locator("#audit")).to_be_visible()
    _shot(page, "audit")


def test_approving_a_correction_takes_it_out_of_the_queue(world: World) -> None:
    from playwright.sync_api import expect

    page = world.signed_in(REVIEWER)
    page.goto(f"{world.url}/ui/review")
    first = world.ids["pending"][0]
    card = page.locator(f'article.correction[data-correction="{first}"]')
    expect(card).to_contain_text("Where do I find the VPN config?")
    expect(card).to_contain_text("I do not know.")
    card.locator("button[value=approve]").click()
    expect(page.locator(".notice")).to_contain_text("Correction approved")
    expect(page.locator(f'article.correction[data-correction="{first}"]')).to_have_count(0)
    expect(page.locator("article.correction")).to_have_count(1)
    expect(page.locator("#memory")).to_contain_text("It is at vpn.example.com/config.")
    # Retiring asks first (a script of the service's own: the CSP allows no inline handler); dismissing keeps it.
    entry = page.locator("#memory tr[data-entry]").first
    page.once("dialog", lambda dialog: dialog.dismiss())
    entry.locator("button.danger").click()
    expect(page.locator("#memory tr[data-entry]")).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    entry.locator("button.danger").click()
    expect(page.locator(".notice")).to_contain_text("Memory entry retired")
    expect(page.locator("#memory tr[data-entry]")).to_have_count(0)


def test_promote_and_roll_back_are_confirmed_and_audited(world: World) -> None:
    from playwright.sync_api import expect

    page = world.signed_in(ADMIN)
    page.goto(f"{world.url}/ui/versions")
    page.locator('tr[data-version="v0001"] button.promote').click()
    expect(page.locator("#confirm .question")).to_have_text(
        "Promote v0001? It replaces v0002 for every answer from now on."
    )
    _shot(page, "confirm")
    page.click("#confirm button[value=yes]")
    expect(page.locator(".notice")).to_contain_text("Promoted")
    expect(page.locator("#active-version")).to_have_text("v0001")
    page.click("#rollback")
    expect(page.locator("#confirm .question")).to_have_text("Roll back from v0001 to v0002?")
    page.click("#confirm button[value=yes]")
    expect(page.locator(".notice")).to_contain_text("Rolled back")
    expect(page.locator("#active-version")).to_have_text("v0002")
    assert world.running.service.services.registry.active.version == "v0002"
    page.goto(f"{world.url}/ui/audit?actor={ADMIN}&outcome=ok")
    expect(page.locator("#audit tbody tr")).to_have_count(2)
    expect(page.locator("#audit tbody tr").first).to_contain_text("rollback")


def test_an_employee_gets_no_admin_page_and_the_server_refuses_their_posts(world: World) -> None:
    from playwright.sync_api import expect

    page = world.signed_in(EMPLOYEE)
    expect(page.locator("nav a")).to_have_text(["Overview", "My questions"])
    expect(page.locator("#pending-count")).to_have_count(0)
    response = page.goto(f"{world.url}/ui/versions")
    assert response is not None and response.status == 403
    expect(page.locator(".error-page h1")).to_have_text("Not allowed")
    # The employee's own, valid CSRF token: the refusal is the server's role check, not the CSRF check.
    page.goto(f"{world.url}/ui")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    for path, form in (
        ("/ui/versions/promote", {"csrf": csrf, "version": "v0001", "confirmed": "yes"}),
        ("/ui/versions/rollback", {"csrf": csrf, "confirmed": "yes"}),
        (f"/ui/review/{world.ids['pending'][0]}", {"csrf": csrf, "decision": "approve"}),
    ):
        refused = page.request.post(f"{world.url}{path}", form=form, max_redirects=0)
        assert refused.status == 403, path
    assert world.running.service.services.registry.active.version == "v0002"
    page.goto(f"{world.url}/ui/feedback")
    expect(page.locator("#interactions")).to_contain_text("Where do I find the VPN config?")
    expect(page.locator("#interactions")).not_to_contain_text("Private question of another employee")
    _shot(page, "employee")
    page.click(".signout button")
    expect(page.locator("#signin")).to_be_visible()
    page.goto(f"{world.url}/ui/feedback")
    expect(page).to_have_url(f"{world.url}/ui/signin?next=%2Fui%2Ffeedback")


def test_a_form_sent_without_its_csrf_token_is_refused(world: World) -> None:
    from playwright.sync_api import expect

    page = world.signed_in(REVIEWER)
    page.goto(f"{world.url}/ui/review")
    first = world.ids["pending"][0]
    card = page.locator(f'article.correction[data-correction="{first}"]')
    card.locator("input[name=csrf]").first.evaluate("field => field.remove()")
    card.locator("button[value=approve]").click()
    expect(page.locator(".error-page")).to_contain_text("CSRF")
    page.goto(f"{world.url}/ui/review")
    expect(page.locator(f'article.correction[data-correction="{first}"]')).to_have_count(1)


def test_live_progress_of_a_running_cycle_without_a_reload(world: World) -> None:
    from playwright.sync_api import expect

    page = world.signed_in(ADMIN)
    page.goto(f"{world.url}/ui/versions")
    box = page.locator("#live-progress")
    expect(box).to_have_attribute("data-running", "no")
    loaded = page.evaluate("performance.timeOrigin")
    run_id = start_running_run(world.engine)
    expect(box.locator('[data-field="run_id"]')).to_have_text(f"#{run_id} (running)")
    expect(box.locator('[data-field="stage"]')).to_have_text("training (sft)")
    expect(box.locator('[data-field="step"]')).to_have_text("3")
    expect(box.locator('[data-field="eta"]')).to_have_text("1 min 25 s")
    set_progress(world.engine, run_id, stage="sft", step=12, total=20, loss=0.5678, eta_s=30.0)
    expect(box.locator('[data-field="step"]')).to_have_text("12")
    expect(box.locator('[data-field="loss"]')).to_have_text("0.5678")
    box.scroll_into_view_if_needed()
    _shot(page, "progress")
    finish_run(world.engine, run_id)
    expect(box).to_have_attribute("data-running", "no")
    assert page.evaluate("performance.timeOrigin") == loaded  # the same page all along: no reload
