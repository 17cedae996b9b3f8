"""Personal data stays inside: detection on realistic support tickets, and a real gateway that sends an
external tier placeholders only, puts the values back in the answer, and logs inputs redacted."""

from __future__ import annotations

import json
import sqlite3
import time

import openai
import pytest
from fake_upstream import FakeUpstream
from gateway_process import GatewayProcess, fleet_with_tiers

from smallfleet.config import ServingSpec
from smallfleet.errors import ConfigError
from smallfleet.pii import KINDS, Redaction, find, iban_valid, luhn_valid
from smallfleet.tiers.base import TierSpec

TICKETS = [  # (ticket, the personal data in it by kind)
    ("Hi, my name is Maria Gonzalez and I was charged twice on my Visa 4111 1111 1111 1111 for order 88412 "
     "on 2024-03-11. Please refund to DE89 3704 0044 0532 0130 00 or call me at +49 30 1234 5678.\n"
     "Thanks,\nMaria Gonzalez",
     {"person": ["Maria Gonzalez"], "card": ["4111 1111 1111 1111"], "iban": ["DE89 3704 0044 0532 0130 00"],
      "phone": ["+49 30 1234 5678"]}),
    ("The tracking page for order #55120 has said 'label created' since 03/02/2025. Reach me on (415) 555-0134 "
     "or j.okafor+orders@mail.example.co.uk -- Dr. James Okafor",
     {"phone": ["(415) 555-0134"], "email": ["j.okafor+orders@mail.example.co.uk"], "person": ["James Okafor"]}),
    ("I cannot log in since the update (error 403, build 7.2.1). My card on file is 5555-5555-5555-4444, "
     "account GB82 WEST 1234 5698 7654 32, phone 020 7946 0958.\nKind regards,\nPriya Raman",
     {"card": ["5555-5555-5555-4444"], "iban": ["GB82 WEST 1234 5698 7654 32"], "phone": ["020 7946 0958"],
      "person": ["Priya Raman"]}),
]
NOT_PII = ("Order 88412 was placed on 2024-03-11 and shipped 12.03.2024; invoice INV-2024-0031, ticket #4421, "
           "version 10.4.2, card 4111 1111 1111 1112 (not a Luhn number), IBAN DE00 3704 0044 0532 0130 00 (bad check).")


@pytest.mark.parametrize("ticket,expected", TICKETS)
def test_every_kind_is_found_in_realistic_tickets_and_put_back(ticket, expected):
    found: dict[str, list[str]] = {}
    for start, end, kind in find(ticket):
        found.setdefault(kind, []).append(ticket[start:end])
    assert {k: sorted(set(v)) for k, v in found.items()} == {k: sorted(v) for k, v in expected.items()}
    redaction = Redaction()
    redacted = redaction.redact(ticket)
    for values in expected.values():
        assert not any(v in redacted for v in values)
    assert redaction.restore(redacted) == ticket
    assert "<PERSON_1>" in redacted and "<PERSON_2>" not in redacted  # one person named twice: one placeholder


def test_numbers_that_are_not_personal_data_stay():
    assert find(NOT_PII) == []
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("DE89 3704 0044 0532 0130 00") and not iban_valid("DE00 3704 0044 0532 0130 00")


def test_redaction_is_configured_per_external_tier():
    spec = TierSpec(name="frontier", base_url="http://x/v1", model="m", external=True, redact=["email", "card"])
    assert spec.redact == ["email", "card"]
    with pytest.raises(ConfigError, match="set external: true"):
        TierSpec(name="local", base_url="http://x/v1", model="m", redact=["email"])
    with pytest.raises(ConfigError, match="unknown kind of personal data 'ssn'"):
        TierSpec(name="f", base_url="http://x/v1", model="m", external=True, redact=["ssn"])
    with pytest.raises(ConfigError, match="log_inputs must be one of full, redacted, none"):
        ServingSpec(log_inputs="some")


def test_an_external_tier_gets_placeholders_and_the_client_gets_its_data_back(fleet_dir, tmp_path):
    frontier = {"name": "frontier", "kind": "openai", "model": "frontier-model", "external": True, "redact": list(KINDS)}
    with FakeUpstream() as upstream:
        folder = fleet_with_tiers(fleet_dir, tmp_path / "fleet", [{**frontier, "base_url": upstream.base_url}])
        db = tmp_path / "pii.db"
        args = ["--db", f"sqlite:///{db}", "--log-inputs", "redacted", "--threshold", "review_sentiment=2"]
        with GatewayProcess(folder, *args) as gw:
            client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
            upstream.mode = "echo"  # the upstream answers with the text it was sent: placeholders
            answers = [client.chat.completions.create(model="frontier-model", messages=[{"role": "user", "content": t}])
                       for t, _ in TICKETS]  # fmt: skip
            upstream.mode = "reply:negative"  # an escalated task request: the specialist's prompt goes out redacted
            escalated = client.chat.completions.create(model="fleet/review_sentiment",
                                                       messages=[{"role": "user", "content": TICKETS[0][0]}])  # fmt: skip
        sent = json.dumps([c["body"] for c in upstream.calls], ensure_ascii=False)
    assert len(upstream.calls) == 4
    for ticket, expected in TICKETS:
        for values in expected.values():
            for value in values:
                assert value not in sent, value  # nothing detected leaves
    assert "<CARD_1>" in sent and "<IBAN_1>" in sent and "<EMAIL_1>" in sent and "<PERSON_1>" in sent
    for answer, (ticket, _) in zip(answers, TICKETS):
        assert answer.choices[0].message.content == "upstream: " + ticket  # restored in the answer
    assert escalated.choices[0].message.content == "negative"
    deadline = time.monotonic() + 10
    while (rows := sqlite3.connect(db).execute("select input, output from requests").fetchall()) and len(rows) < 4:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(rows) == 4
    logged = json.dumps(rows, ensure_ascii=False)
    assert "<CARD_1>" in logged and "4111 1111 1111 1111" not in logged and "Maria Gonzalez" not in logged
