"""Two gateway replicas on one PostgreSQL and one fleet folder, as behind a load balancer:
a promotion made through one is served by both, a review answered on one is done on the
other and in the export, and a key's budget is spent once across both."""

from __future__ import annotations

import json
import re
import time

import httpx
import openai
import pytest
from cli_process import cli
from fleet_copy import copy_fleet
from gateway_process import GatewayProcess

from smallfleet.store import Database
from smallfleet.store.keys import create_key
from smallfleet.store.limits import KeyLimits, usage

TICKET = "I was charged twice for order 88412, please refund the extra payment"
REVIEW = "The kettle arrived on time and boils water."


@pytest.fixture
def fleet(fleet_dir, tmp_path):
    """A copy of the test fleet (a promotion rewrites its fleet.json) with a second version of support_ticket."""
    return copy_fleet(fleet_dir, tmp_path / "fleet", second_version="support_ticket")


class Console:
    """The web console of one replica, signed in with a key, driven over HTTP as a browser's forms would."""

    def __init__(self, gw: GatewayProcess, key: str):
        self.root = f"http://127.0.0.1:{gw.port}/ui"
        self.http = httpx.Client(timeout=60, follow_redirects=False)
        token = self.http.get(f"{self.root}/signin").cookies["smallfleet_signin"]
        signed = self.http.post(f"{self.root}/signin", data={"csrf": token, "key": key, "next": "/ui"})
        assert signed.status_code == 303, signed.text
        self.csrf = re.search(r'name="csrf" value="([^"]+)"', self.get("/reviews").text).group(1)

    def get(self, path: str) -> httpx.Response:
        page = self.http.get(self.root + path)
        assert page.status_code == 200, page.text
        return page

    def post(self, path: str, form: dict) -> httpx.Response:
        return self.http.post(self.root + path, data={**form, "csrf": self.csrf})


def served_version(gw: GatewayProcess, key: str) -> str:
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    answer = client.chat.completions.create(model="fleet/support_ticket", messages=[{"role": "user", "content": TICKET}])
    return answer.model_extra["smallfleet"]["version"]


def wait_until_served(gw: GatewayProcess, key: str, version: str) -> None:
    deadline = time.monotonic() + 60  # the watcher polls fleet.json every second; a reload takes a few
    while (seen := served_version(gw, key)) != version:
        assert time.monotonic() < deadline, f"replica on port {gw.port} still serves {seen}, not {version}"
        time.sleep(0.5)


def test_two_replicas_on_one_postgresql_share_versions_reviews_and_budgets(postgres, fleet, tmp_path):
    db = Database(postgres)
    admin = create_key(db, "ops", role="admin")
    client = create_key(db, "app")
    budget = KeyLimits(budget_usd=1e-9, period="month")  # any answered request spends it all
    frugal = create_key(db, "frugal", limits=budget)
    args = ("--db", postgres, "--threshold", "review_sentiment=2")  # every review_sentiment request goes to a person
    with GatewayProcess(fleet, *args) as a, GatewayProcess(fleet, *args) as b:
        # versions: promoted through replica a's console, served by both
        assert served_version(a, client) == served_version(b, client) == "v1"
        on_a = Console(a, admin)
        confirmed = on_a.post("/versions/promote", {"task": "support_ticket", "version": "v2", "confirmed": "yes"})
        assert confirmed.status_code == 303 and "v2%20promoted" in confirmed.headers["location"]
        wait_until_served(b, client, "v2")
        wait_until_served(a, client, "v2")
        # ... and rolled back from the shell, followed by both
        cli("rollback", str(fleet), "--task", "support_ticket")
        wait_until_served(a, client, "v1")
        wait_until_served(b, client, "v1")

        # reviews: queued through a, answered on b's console, done on a's
        asked = openai.OpenAI(base_url=a.base_url, api_key=client, max_retries=0).chat.completions.create(
            model="fleet/review_sentiment", messages=[{"role": "user", "content": REVIEW}])
        item = asked.model_extra["smallfleet"]["review"]
        assert item["status"] == "pending"
        on_b = Console(b, admin)
        assert f'id="review-{item["id"]}"' in on_b.get("/reviews").text
        answered = on_b.post(f"/reviews/{item['id']}", {"answer": "positive", "widget": "choice", "task": ""})
        assert answered.status_code == 303 and "recorded%20positive" in answered.headers["location"]
        assert f'id="review-{item["id"]}"' not in on_a.get("/reviews").text
        again = on_a.post(f"/reviews/{item['id']}", {"answer": "negative", "widget": "choice", "task": ""})
        assert again.status_code == 400 and "already answered" in again.text
        out = tmp_path / "reviews.jsonl"
        cli("review", "export", str(fleet), "--task", "review_sentiment", "--out", str(out), "--db", postgres)
        assert [json.loads(line) for line in out.read_text().splitlines()] == [{"review": REVIEW, "rating_label": "positive"}]

        # budgets: what the key spends through a is spent for b
        with db.engine.connect() as conn:
            frugal_id = conn.exec_driver_sql("select id from api_keys where name = 'frugal'").scalar()
        assert served_version(a, frugal) == "v1"
        deadline = time.monotonic() + 30
        while usage(db, frugal_id, budget)["usd"] == 0:  # the answer's cost is charged after the response
            assert time.monotonic() < deadline, "the request's cost was never charged to the key"
            time.sleep(0.2)
        with pytest.raises(openai.RateLimitError, match="budget exhausted"):
            served_version(b, frugal)
