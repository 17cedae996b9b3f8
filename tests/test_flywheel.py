"""The flywheel's first half, through a real gateway: feedback on answers (HTTP and shell) and
the labelled traffic the log gathers from reviews, feedback and upstream answers."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from cli_process import cli
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess

TICKET = "I was charged twice for order 88412, please refund the extra payment"
REVIEW = "Stopped charging after a week and support never answered."
KETTLE = "It arrived. It is a kettle."


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as fake:
        yield fake


def test_feedback_and_labelled_traffic(fleet_dir, upstream, tmp_path):
    url = f"sqlite:///{tmp_path / 'fly.db'}"
    db = ["--db", url]
    keys = {name: cli("keys", "create", str(fleet_dir), name, "--role", role, *db).stdout.strip()
            for name, role in (("alice", "client"), ("bob", "client"), ("ops", "admin"))}  # fmt: skip
    args = [*db, "--escalate-to", upstream.base_url, "--escalate-model", "frontier", "--threshold", "support_ticket=0",
            "--threshold", "review_sentiment=2"]  # fmt: skip
    with GatewayProcess(fleet_dir, *args) as gw:
        alice = openai.OpenAI(base_url=gw.base_url, api_key=keys["alice"], max_retries=0)

        def ask(model: str, text: str):
            return alice.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])

        def feedback(body: dict, key: str | None = "alice") -> httpx.Response:
            headers = {"Authorization": f"Bearer {keys[key]}"} if key else {}
            return httpx.post(f"{gw.base_url}/feedback", json=body, headers=headers, timeout=30)

        ticket = ask("fleet/support_ticket", TICKET)
        sf = ticket.model_extra["smallfleet"]
        assert sf["request_id"] == ticket.id and sf["tier"] == "specialist"
        label = ticket.choices[0].message.content
        # right after the answer (the log row may not be written yet), from the key that asked
        ok = feedback({"request_id": ticket.id, "correct": True})
        assert ok.status_code == 200 and ok.json() == {"request_id": ticket.id, "task": "support_ticket",
                                                       "recorded": "correct", "answer": label, "agrees": True}  # fmt: skip
        other = "shipping" if label != "shipping" else "billing"
        refused = {
            403: feedback({"request_id": ticket.id, "correct": False}, "bob"),  # another client's request
            401: feedback({"request_id": ticket.id, "correct": False}, None),
            404: feedback({"request_id": "chatcmpl-nope", "correct": True}),
        }
        for status, response in refused.items():
            assert response.status_code == status and response.json()["error"]["message"], response.text
        assert "another key" in refused[403].json()["error"]["message"]
        for body, reason in (({"request_id": ticket.id, "answer": "meh"}, "not a label of task 'support_ticket'"),
                             ({"request_id": ticket.id, "answer": other, "correct": True}, "exactly one of"),
                             ({"request_id": ticket.id}, "exactly one of"),
                             ({"request_id": ticket.id, "answr": other}, "answr"),
                             ({"answer": other}, "request_id")):  # fmt: skip
            bad = feedback(body)
            assert bad.status_code == 400 and reason in bad.json()["error"]["message"], (body, bad.text)
        corrected = feedback({"request_id": ticket.id, "answer": other}, "ops")  # an admin may correct any request
        assert corrected.status_code == 200 and corrected.json()["agrees"] is False

        upstream.mode = "reply:negative"
        reviews = [ask("fleet/review_sentiment", REVIEW) for _ in range(3)]
        assert all(r.model_extra["smallfleet"]["tier"] == "escalate" for r in reviews)
        upstream.mode = "reply:I cannot tell, sorry"  # unusable: falls through to the review queue
        kettle = ask("fleet/review_sentiment", KETTLE)
        assert kettle.model_extra["smallfleet"]["review"]["status"] == "pending"

    # from the shell: a right answer to an escalated request (the specialist's answer was not served)
    done = cli("feedback", str(fleet_dir), reviews[0].id, "--answer", "positive", *db)
    assert "not the specialist's" in done.stdout
    assert "no request" in cli("feedback", str(fleet_dir), "chatcmpl-nope", "--correct", *db, check=False).stderr
    cli("feedback", str(fleet_dir), kettle.id, "--answer", "negative", *db)
    review_id = str(kettle.model_extra["smallfleet"]["review"]["id"])
    cli("review", "answer", str(fleet_dir), review_id, "neutral", *db)  # a person outranks the feedback

    out = tmp_path / "traffic.jsonl"
    summary = json.loads(cli("traffic", str(fleet_dir), "--task", "review_sentiment", "--out", str(out), "--json", *db).stdout)
    assert summary["by_source"] == {"human": 1, "feedback": 1} and summary["rows"] == 2
    assert summary["superseded"] == 2  # reviews[0]'s upstream answer, the kettle's feedback
    assert summary["duplicates"] == 1  # reviews[1] and [2]: same text, same upstream answer
    (conflict,) = summary["conflicts"]
    assert conflict["text"] == REVIEW and conflict["kept"] == "positive"
    assert conflict["answers"] == {"positive": ["feedback"], "negative": ["upstream", "upstream"]}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(rows, key=str) == sorted([{"review": REVIEW, "rating_label": "positive"},
                                            {"review": KETTLE, "rating_label": "neutral"}], key=str)  # fmt: skip
    tickets = json.loads(cli("traffic", str(fleet_dir), "--task", "support_ticket", "--json", *db).stdout)
    assert tickets["by_source"] == {"feedback": 1} and tickets["superseded"] == 1  # the later feedback wins

    live = json.loads(cli("costs", str(fleet_dir), "--json", *db).stdout)["live_quality"]
    assert (live["support_ticket"]["judged"], live["support_ticket"]["agreed"]) == (1, 0)  # the correction counts
    assert live["support_ticket"]["by_source"]["feedback"] == 2
