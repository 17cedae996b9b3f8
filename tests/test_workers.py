"""`serve --workers N`: several gateway processes on one port, forked from one loaded fleet, as users run it."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
from cli_process import cli
from fleet_copy import copy_fleet
from gateway_process import GatewayProcess

from smallfleet.store import Database
from smallfleet.store.keys import create_key

TICKETS = ["I was charged twice for order {n}, please refund it", "My parcel {n} never arrived",
           "How do I reset my password? Attempt {n}", "The app crashes when I open invoice {n}"]  # fmt: skip


def workers_of(gw: GatewayProcess) -> list[int]:
    children = f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children"
    return sorted(int(pid) for pid in open(children).read().split())


def memory(pid: int) -> dict[str, int]:
    """kB by kind from /proc/PID/smaps_rollup (Rss, Pss, Shared_Clean, Shared_Dirty, Private_Dirty, ...)."""
    rows = (line.split() for line in open(f"/proc/{pid}/smaps_rollup").read().splitlines()[1:])
    return {row[0].rstrip(":"): int(row[1]) for row in rows}


def requests_counted(page: str) -> float:
    """The sum of every `smallfleet_requests_total` series in a /metrics page."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in page.splitlines() if line.startswith("smallfleet_requests_total{"))


def ask(gw: GatewayProcess, key: str, n: int) -> list[str]:
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)

    def one(i: int) -> str:
        text = TICKETS[i % len(TICKETS)].format(n=1000 + i)
        answer = client.chat.completions.create(model="fleet", messages=[{"role": "user", "content": text}])
        assert answer.choices[0].message.content
        return answer.id

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def test_two_workers_share_the_port_the_weights_the_log_the_metrics_and_the_console(fleet_dir, tmp_path):
    fleet = copy_fleet(fleet_dir, tmp_path / "fleet")
    url = f"sqlite:///{tmp_path / 'log.db'}"
    db = Database(url)
    key = create_key(db, "ops", role="admin")
    with GatewayProcess(fleet, "--workers", "2", "--db", url) as gw:
        assert "workers: 2 processes forked from this one" in gw.output()
        first = workers_of(gw)
        assert len(first) == 2
        # the weights were loaded once, before the fork: most of each worker's memory is shared, not its own
        for pid in first:
            mem = memory(pid)
            assert mem["Shared_Clean"] + mem["Shared_Dirty"] > 2 * mem["Private_Dirty"], mem

        answered = ask(gw, key, 40)
        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(6):  # whichever worker takes the scrape, it counts every worker's requests
            page = httpx.get(f"http://127.0.0.1:{gw.port}/metrics", headers=headers).text
            assert requests_counted(page) == 40, page

        # a console session started on one worker is known to all of them (fresh connections, any worker)
        root = f"http://127.0.0.1:{gw.port}/ui"
        with httpx.Client() as browser:
            token = browser.get(f"{root}/signin").cookies["smallfleet_signin"]
            signed = browser.post(f"{root}/signin", data={"csrf": token, "key": key, "next": "/ui"})
            assert signed.status_code == 303, signed.text
            cookie = browser.cookies["smallfleet_console"]
        for _ in range(6):
            page = httpx.get(f"{root}/reviews", cookies={"smallfleet_console": cookie})
            assert page.status_code == 200 and "ops" in page.text, page.text[:300]

        # a worker killed outright is replaced, and the gateway keeps answering meanwhile
        os.kill(first[0], signal.SIGKILL)
        answered += ask(gw, key, 40)
        deadline = time.monotonic() + 120
        while len(now := workers_of(gw)) < 2 or first[0] in now:
            assert time.monotonic() < deadline, f"no worker replaced {first[0]}: {now}\n{gw.output()}"
            time.sleep(0.5)
        answered += ask(gw, key, 8)
    with db.engine.connect() as conn:  # the dead worker's journal was replayed by its replacement
        logged = [row[0] for row in conn.exec_driver_sql("SELECT request_id FROM requests WHERE task IS NOT NULL")]
    assert sorted(logged) == sorted(answered)


def test_workers_need_a_shared_log_and_one_thread_each(fleet_dir, tmp_path):
    memory_log = cli("serve", fleet_dir, "--workers", "2", "--db", "sqlite://", check=False)
    assert memory_log.returncode != 0 and "need a request log they can share" in memory_log.stderr
    threads = cli("serve", fleet_dir, "--workers", "2", "--threads", "2", "--db", f"sqlite:///{tmp_path / 'x.db'}",
                  check=False)  # fmt: skip
    assert threads.returncode != 0 and "each worker's models run on one thread" in threads.stderr
