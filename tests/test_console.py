"""The console (`GET /ui`) in a real headless Chromium against a real gateway process: sign-in,
the overview's counts against the request log, answering a classify and an extract review
item in the browser (they come out of `review export`), roles (a reviewer cannot promote,
an admin can), CSRF, and no console error on any page. Screenshots of every page go to the
test's output folder. Pages come from a lower-priority process of the gateway and are kept
for the session a few seconds, except that an answer given in the console shows at once.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import openai
import pytest
from browser import chromium, console_errors
from cli_process import run
from conftest import ROOT
from gateway_process import GatewayProcess
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

TICKETS = ["I was charged twice for order 88412", "Where is my parcel? It has been a week.",
           "How do I reset my password?"]  # fmt: skip
REVIEWS = ["Broke after two days, awful.", "Love it, five stars!"]
ORDERS = ["please cancel order 4455667 now", "upgrade me to the Platinum plan"]
PAGES = ["/ui", "/ui/tasks", "/ui/reviews", "/ui/requests", "/ui/versions"]


def _bitext(shared, path, per_type=18):
    rows = [json.loads(line) for line in (shared / "bitext_support" / "all.jsonl").read_text().splitlines()]
    random.Random(7).shuffle(rows)
    taken, out = {}, []
    for r in rows:
        if taken.get(r["entity_type"], 0) < per_type:
            taken[r["entity_type"]] = taken.get(r["entity_type"], 0) + 1
            out.append({"text": r["text"], "fields": {r["entity_type"]: r["entity_value"]} if r["entity_type"] else {}})
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


@pytest.fixture(scope="module")
def console_fleet(fleet_dir, shared_datasets, tmp_path_factory):
    """The session's two classify tasks plus a small extract task (one short training), with a second version
    of review_sentiment registered (a copy of v1) so there is something to promote."""
    from smallfleet.config import FleetSpec, TierSpec
    from smallfleet.fleet import train_fleet
    from smallfleet.flywheel.versions import add_version, list_versions, version_folder
    from smallfleet.tasks import FieldMap, TaskSpec
    from smallfleet.tasks.extract.settings import ExtractSettings

    work = tmp_path_factory.mktemp("console")
    fleet = work / "fleet"
    shutil.copytree(fleet_dir, fleet, ignore=shutil.ignore_patterns("*.db", "*.db-*"))
    orders = TaskSpec(name="orders", kind="extract", train=_bitext(shared_datasets, work / "orders.jsonl"),
                      fields=FieldMap(text="text", label="fields"),
                      settings=ExtractSettings(schema=ROOT / "bench" / "schemas" / "bitext_support.json", epochs=2,
                                               max_length=32, batch_size=16))  # fmt: skip
    train_fleet(FleetSpec(name="testfleet", tasks=[orders], tiers=[TierSpec(name="human", kind="review")]), fleet)
    v1 = list_versions(fleet, "review_sentiment")["review_sentiment"][0]
    shutil.copytree(fleet / v1["folder"], version_folder(fleet, "review_sentiment", "v2"))
    add_version(fleet, "review_sentiment", version_folder(fleet, "review_sentiment", "v2"), v1["metrics"], v1["cascade"])
    return fleet


@pytest.fixture(scope="module")
def served(console_fleet, tmp_path_factory):
    """A gateway with keys (client, reviewer, admin), some local answers and escalations to the review queue."""
    from smallfleet.store import Database
    from smallfleet.store.keys import create_key

    db_file = tmp_path_factory.mktemp("console-db") / "log.db"
    db = Database(f"sqlite:///{db_file}")
    keys = {role: create_key(db, role, role) for role in ("client", "reviewer", "admin")}
    db.close()
    args = ["--db", f"sqlite:///{db_file}", "--threshold", "support_ticket=0", "--threshold", "review_sentiment=2",
            "--threshold", "orders=2", "--console-cache-seconds", "10"]  # fmt: skip
    with GatewayProcess(console_fleet, *args) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=keys["client"], max_retries=0)
        for model, texts in (("support_ticket", TICKETS), ("review_sentiment", REVIEWS), ("orders", ORDERS)):
            for text in texts:
                client.chat.completions.create(model=f"fleet/{model}", messages=[{"role": "user", "content": text}])
        deadline = time.monotonic() + 30
        while count(db_file, "select count(*) from requests") < len(TICKETS + REVIEWS + ORDERS):
            assert time.monotonic() < deadline, "the request log was not written"
            time.sleep(0.1)
        yield gw, db_file, keys


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        driver.implicitly_wait(10)  # find_element waits for the next page to load
        yield driver


def notice(driver, words: str) -> str:
    """The page's notice once it says `words` (a form post redirects to a page that says what was done)."""
    WebDriverWait(driver, 20).until(lambda d: words in d.find_element(By.CLASS_NAME, "notice").text)
    return driver.find_element(By.CLASS_NAME, "notice").text


def count(db_file, sql: str) -> int:
    return sqlite3.connect(db_file).execute(sql).fetchone()[0]


def url(gw, path: str) -> str:
    return f"http://127.0.0.1:{gw.port}{path}"


def sign_in(driver, gw, key: str) -> None:
    driver.delete_all_cookies()
    driver.get(url(gw, "/ui"))
    assert driver.current_url.startswith(url(gw, "/ui/signin"))
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "signin").click()
    signed = "return !!(document.getElementById('who') || document.getElementById('error'))"  # the next page is in
    WebDriverWait(driver, 20).until(lambda d: d.execute_script(signed))


def test_sign_in_and_the_overview_shows_the_ledger(served, browser, tmp_path):
    gw, db_file, keys = served
    driver = browser
    sign_in(driver, gw, "sf-not-a-key")
    assert "unknown or revoked key" in driver.find_element(By.ID, "error").text
    sign_in(driver, gw, keys["client"])
    assert "only calls the API" in driver.find_element(By.ID, "error").text
    assert len(console_errors(driver)) == 2  # the refused sign-ins answer 401 and 403, which the browser reports
    sign_in(driver, gw, keys["reviewer"])
    assert "reviewer" in driver.find_element(By.ID, "who").text and driver.current_url == url(gw, "/ui")
    cookie = driver.get_cookie("smallfleet_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and keys["reviewer"] not in cookie["value"]
    assert driver.execute_script("return document.cookie") == ""  # not readable by scripts

    row = driver.find_elements(By.CSS_SELECTOR, "#windows tbody tr")
    cells = {r.find_element(By.TAG_NAME, "th").text: [c.text.split()[0] for c in r.find_elements(By.TAG_NAME, "td")]
             for r in row}  # fmt: skip
    # columns: last hour, last day, last week, all time; every request was made a moment ago
    assert cells["requests"] == [str(count(db_file, "select count(*) from requests"))] * 4
    assert cells["escalated"] == [str(count(db_file, "select count(*) from requests where escalated"))] * 4
    assert cells["answered locally"] == [str(count(db_file, "select count(*) from requests where tier = 'specialist'"))] * 4
    assert int(cells["escalated"][0]) == len(REVIEWS + ORDERS) and int(cells["answered locally"][0]) == len(TICKETS)
    assert len(driver.find_elements(By.CSS_SELECTOR, "svg.chart")) == 2
    for path in PAGES:
        driver.get(url(gw, path))
        driver.save_screenshot(str(tmp_path.parent / f"console-{path.strip('/').replace('/', '-')}.png"))
        assert console_errors(driver) == [], path
        assert all(k not in driver.page_source for k in keys.values())
    log = gw.output()
    assert all(k not in log for k in keys.values())


def test_answering_reviews_in_the_browser_feeds_review_export(served, browser, console_fleet, tmp_path):
    gw, db_file, keys = served
    driver = browser
    sign_in(driver, gw, keys["reviewer"])
    driver.get(url(gw, "/ui/reviews?task=review_sentiment"))
    first = driver.find_element(By.CSS_SELECTOR, "article.review")
    guess = first.find_element(By.CSS_SELECTOR, "button[data-guess]")
    assert driver.switch_to.active_element == guess  # the guess is pre-selected: Enter would send it
    labels = [b.get_attribute("value") for b in first.find_elements(By.CSS_SELECTOR, "button.choice")]
    item = first.get_attribute("id").split("-")[1]
    driver.find_element(By.TAG_NAME, "body").send_keys("2")  # keyboard shortcut: the second label
    notice(driver, f"review #{item}: recorded {labels[1]}")
    second = driver.find_element(By.CSS_SELECTOR, "article.review")
    second_id, second_guess = second.get_attribute("id").split("-")[1], second.find_element(By.CSS_SELECTOR, "button[data-guess]")
    assert driver.switch_to.active_element == second_guess
    second_guess.send_keys(Keys.ENTER)  # the next item: its guess, as pre-selected
    notice(driver, f"review #{second_id}: recorded")
    assert driver.find_element(By.ID, "empty")  # both review_sentiment items answered

    driver.get(url(gw, "/ui/reviews?task=orders"))
    form = driver.find_element(By.CSS_SELECTOR, "article.review form[data-record]")
    order_item = driver.find_element(By.CSS_SELECTOR, "article.review").get_attribute("id").split("-")[1]
    order = form.find_element(By.NAME, "field.order_id")
    order.clear()
    order.send_keys("4455667")
    for name in ("invoice_id", "person_name", "delivery_city", "delivery_country", "refund_amount"):
        form.find_element(By.NAME, f"field.{name}").clear()
    form.find_element(By.CSS_SELECTOR, "select[name='field.account_type'] option[value='']").click()
    form.find_element(By.CLASS_NAME, "send").click()
    notice(driver, f"review #{order_item}: recorded")
    assert console_errors(driver) == []

    sentiment, orders = tmp_path / "sentiment.jsonl", tmp_path / "orders.jsonl"
    run("review", "export", console_fleet, "--task", "review_sentiment", "--out", sentiment, "--db", f"sqlite:///{db_file}")
    run("review", "export", console_fleet, "--task", "orders", "--out", orders, "--db", f"sqlite:///{db_file}")
    exported = [json.loads(line) for line in sentiment.read_text().splitlines()]
    assert [r["review"] for r in exported] == REVIEWS and exported[0]["rating_label"] == labels[1]
    assert [json.loads(line) for line in orders.read_text().splitlines()] == [
        {"text": ORDERS[0], "fields": {"order_id": "4455667"}}]  # fmt: skip
    reviewers = {r for (r,) in sqlite3.connect(db_file).execute("select reviewer from reviews where status = 'answered'")}
    assert reviewers == {"reviewer"}
    assert count(db_file, "select count(*) from judgements where source = 'review'") == 3  # ground truth, as the CLI


def test_a_reviewer_cannot_promote_and_an_admin_can(served, browser, console_fleet, tmp_path):
    gw, db_file, keys = served
    driver = browser
    sign_in(driver, gw, keys["reviewer"])
    driver.get(url(gw, "/ui/versions"))
    assert "need an admin key" in driver.find_element(By.ID, "versions-review_sentiment").text
    assert driver.find_elements(By.CSS_SELECTOR, "button.promote, button.rollback") == []
    csrf = driver.find_element(By.CSS_SELECTOR, "form.who input[name=csrf]").get_attribute("value")
    cookie = {"smallfleet_console": driver.get_cookie("smallfleet_console")["value"]}  # the reviewer's own session
    forged = httpx.post(url(gw, "/ui/versions/promote"), cookies=cookie, follow_redirects=False,
                        data={"task": "review_sentiment", "version": "v2", "confirmed": "yes", "csrf": csrf})  # fmt: skip
    assert forged.status_code == 403 and "may not promote" in forged.text
    assert json.loads((console_fleet / "fleet.json").read_text())["tasks"]["review_sentiment"]["served"] == "v1"
    no_token = httpx.post(url(gw, "/ui/reviews/1"), cookies=cookie, data={"answer": "positive"})
    assert no_token.status_code == 403 and "security token" in no_token.text

    sign_in(driver, gw, keys["admin"])
    driver.get(url(gw, "/ui/versions"))
    driver.find_element(By.CSS_SELECTOR, "button.promote[data-task=review_sentiment][data-version=v2]").click()
    driver.find_element(By.ID, "confirm").click()  # the confirmation page
    notice(driver, "v2 promoted")
    deadline = time.monotonic() + 60
    while "serving v2" not in driver.find_element(By.ID, "versions-review_sentiment").text:  # the gateway reloads
        assert time.monotonic() < deadline, "the gateway did not switch to v2"
        time.sleep(0.5)
        driver.refresh()
    driver.save_screenshot(str(tmp_path.parent / "console-versions-admin.png"))
    assert console_errors(driver) == []


def builder_niceness(gw) -> list[int]:
    """The niceness of each process the gateway started (the console's builder among them)."""
    pid = gw.proc.pid
    children = [c for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    return [int(Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[16]) for c in children]


def test_pages_are_kept_for_the_session_until_it_answers_a_review(served):
    from smallfleet.store import Database

    gw, db_file, keys = served
    page = "/ui/reviews?task=review_sentiment"
    with httpx.Client(base_url=url(gw, ""), timeout=120) as c:
        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/ui/signin").text)[1]
        assert c.post("/ui/signin", data={"csrf": csrf, "key": keys["reviewer"], "next": page}).status_code == 303
        before = c.get(page)
        assert before.status_code == 200
        db = Database(f"sqlite:///{db_file}")
        with db.engine.begin() as conn:  # two items join the queue behind the gateway's back
            ids = [conn.execute(db.reviews.insert(), {"request_id": f"chatcmpl-cache{i}", "task": "review_sentiment",
                                                      "created_at": datetime.now(UTC),
                                                      "input": f"kept page test {i}", "guess": None, "confidence": 0.2,
                                                      "status": "pending"}).inserted_primary_key[0] for i in (1, 2)]  # fmt: skip
        db.close()
        kept = c.get(page)
        assert kept.text == before.text and "kept page test" not in kept.text  # the session's page, kept
        assert "kept page test 1" in c.get(page + "&other=1").text  # another URL is built now
        csrf = re.search(r'name="csrf" value="([^"]+)"', kept.text)[1]
        label = re.search(r'<button type="submit" name="answer" value="([^"]+)"', c.get(page + "&other=1").text)[1]
        answered = c.post(f"/ui/reviews/{ids[0]}", data={"csrf": csrf, "widget": "choice", "task": "review_sentiment",
                                                         "answer": label})  # fmt: skip
        assert answered.status_code == 303 and f"recorded%20{label}" in answered.headers["location"]
        after = c.get(page).text  # the page the answer came from: the answer shows at once
        assert f'id="review-{ids[0]}"' not in after and f'id="review-{ids[1]}"' in after
    assert 10 in builder_niceness(gw)  # pages were built in the gateway's lower-priority builder process


def test_a_session_asking_faster_than_a_person_reads_waits_its_turn():
    from smallfleet.serve.console.builder import Pacer

    pacer = Pacer(rate=4, burst=3)
    assert [pacer.delay("a") for _ in range(3)] == [0, 0, 0]  # the burst
    waits = [pacer.delay("a") for _ in range(3)]
    assert all(0.25 * (i + 1) - 0.05 < w <= 0.25 * (i + 1) for i, w in enumerate(waits))  # a quarter second apart
    assert pacer.delay("b") == 0  # another session is not held up
