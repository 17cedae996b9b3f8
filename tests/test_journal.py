"""The request log's journal: a row is on disk before its response, and a gateway killed with
`kill -9` loses none of the requests it answered (the next start-up replays them exactly once)."""

from __future__ import annotations

import fcntl
import sqlite3
import threading

import openai
from gateway_process import GatewayProcess
from sqlalchemy import func, select

from smallfleet.store import Database
from smallfleet.store.journal import JOURNAL_FOLDER, Journal
from smallfleet.store.ledger import Ledger, new_row

TICKET = "I was charged twice for my order, please refund the extra payment"


def _counts(db: Database, ids: list[str]) -> dict[str, int]:
    r = db.requests
    with db.engine.connect() as conn:
        query = select(r.c.request_id, func.count()).where(r.c.request_id.in_(ids)).group_by(r.c.request_id)
        return dict(conn.execute(query).all())


def test_rows_of_a_dead_journal_are_replayed_once_and_only_into_their_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    db = Database(url)
    dead = Journal(tmp_path / "j", url)
    rows = [new_row(request_id=f"r{i}", status="ok", http_status=200, input=f"text {i} \ud800") for i in range(5)]
    for row in rows:
        dead.append(row)
    with open(dead.folder / "000000000001.jsonl", "a") as f:
        f.write('{"request_id": "cut-sho')  # the killed writer's last line, cut short: it got no response
    stored = Ledger(db)  # r0 reached the database before the gateway died
    stored.record(rows[0])
    stored.close()
    other = Journal(tmp_path / "j", "sqlite:///elsewhere.db")  # another database's journal, its gateway also dead
    other.append(new_row(request_id="not-mine", status="ok", http_status=200))
    fcntl.flock(dead._lock_file, fcntl.LOCK_UN)  # both gateways "die": their locks go, their files stay
    fcntl.flock(other._lock_file, fcntl.LOCK_UN)

    first = Ledger(db, Journal(tmp_path / "j", url))
    first.close()
    counts = _counts(db, [r["request_id"] for r in rows] + ["not-mine"])
    assert counts == {f"r{i}": 1 for i in range(5)}
    assert first.replayed == 4  # r0 was already stored: skipped
    assert not dead.folder.exists() and other.folder.exists()  # the other database's journal waits for its gateway
    again = Ledger(db, Journal(tmp_path / "j", url))
    again.close()
    assert again.replayed == 0


def test_the_journal_empties_as_rows_reach_the_database(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'log.db'}")
    ledger = Ledger(db, Journal(tmp_path / "j", db.url))
    for i in range(3000):  # more than one segment
        ledger.record(new_row(request_id=f"q{i}", status="ok", http_status=200))
    ledger._queue.join()
    segments = list(ledger.journal.folder.glob("*.jsonl"))
    assert len(segments) == 1 and segments[0].stat().st_size == 0
    ledger.close()
    assert not ledger.journal.folder.exists()
    assert sum(_counts(db, [f"q{i}" for i in range(3000)]).values()) == 3000


def test_a_gateway_killed_mid_load_loses_no_answered_request(fleet_dir, tmp_path):
    """Concurrent clients, the database write held back, `kill -9`, restart: every 200 is logged exactly once."""
    db_file = tmp_path / "killed.db"
    url = f"sqlite:///{db_file}"
    Database(url)
    answered: list[str] = []
    stop = threading.Event()

    def client(base_url: str) -> None:
        c = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=10)
        while not stop.is_set():
            try:
                reply = c.chat.completions.create(model="fleet/support_ticket",
                                                  messages=[{"role": "user", "content": TICKET}])
            except openai.APIConnectionError:  # the gateway was killed: this request got no response
                return
            answered.append(reply.id)

    gateway = GatewayProcess(fleet_dir, "--db", url, "--threshold", "support_ticket=0")  # answered by the specialist
    with gateway:
        # hold SQLite's write lock: the gateway keeps answering, its rows wait in memory and in the journal
        blocker = sqlite3.connect(db_file, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        threads = [threading.Thread(target=client, args=(gateway.base_url,)) for _ in range(4)]
        for t in threads:
            t.start()
        while len(answered) < 40 and all(t.is_alive() for t in threads):
            stop.wait(0.05)
        gateway.proc.kill()  # kill -9, mid-load
        gateway.proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        blocker.execute("ROLLBACK")
        blocker.close()
    ids = list(answered)
    assert len(ids) >= 40
    db = Database(url)
    assert _counts(db, ids) == {}  # nothing reached the database before the kill: only the journal has them
    with GatewayProcess(fleet_dir, "--db", url) as restarted:
        pass
    assert "replayed from its journal" in restarted.output()
    assert _counts(db, ids) == {i: 1 for i in ids}
    assert not [p for p in (fleet_dir / JOURNAL_FOLDER).iterdir() if p.name.split("-")[0] == str(gateway.proc.pid)]
