"""What the request-log journal costs on the request path: `Ledger.record` without a journal,
with one (a `write()` per row), and with `serving.journal_fsync` (a disk sync per row).

`record` is what the gateway calls before a response goes out, so its time is added to every
request. The writer's throughput (rows per second into SQLite, the database write being in
the background) is reported too, to show the journal does not slow the log itself.

    python bench/journal.py                 # 5,000 rows per mode
    python bench/journal.py --rows 20000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import machine, update_results, write_json
from rich.console import Console
from rich.table import Table

from smallfleet.store import Database
from smallfleet.store.journal import Journal
from smallfleet.store.ledger import Ledger, new_row

MODES = {"no journal": None, "journal": False, "journal + fsync": True}


def run(mode: str, rows: int, work: Path) -> dict:
    """Record `rows` typical request rows in `mode`; per-call times of `record` and the writer's total time."""
    db = Database(f"sqlite:///{work / (mode.replace(' ', '_').replace('+', '') + '.db')}")
    fsync = MODES[mode]
    ledger = Ledger(db, None if fsync is None else Journal(work / "journal", db.url, fsync))
    text = "I was charged twice for order 88412, please refund the extra payment. " * 3
    times = []
    started = time.perf_counter()
    for i in range(rows):
        row = new_row(request_id=f"chatcmpl-{mode}-{i}", model="fleet", task="support_ticket", tier="specialist",
                      status="ok", http_status=200, input=text, output="billing", confidence=0.93, latency_ms=4.2,
                      cost_usd=1e-7, frontier_cost_usd=4e-4)  # fmt: skip
        t = time.perf_counter()
        ledger.record(row)
        times.append((time.perf_counter() - t) * 1e6)
    ledger._queue.join()  # every row in the database
    total = time.perf_counter() - started
    ledger.close()
    times.sort()
    return {"mode": mode, "rows": rows, "record_p50_us": statistics.median(times),
            "record_p99_us": times[int(0.99 * (len(times) - 1))], "rows_per_s": rows / total}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000, help="Rows recorded per mode.")
    parser.add_argument("--no-update", action="store_true", help="Do not rewrite bench/RESULTS.md.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smallfleet-bench-") as tmp:
        results = [run(mode, args.rows, Path(tmp)) for mode in MODES]
    base = results[0]
    table = Table(title="request-log journal: time added to each request by Ledger.record")
    for col in ("mode", "record p50 (us)", "record p99 (us)", "p50 vs no journal", "writer rows/s"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(r["mode"], f"{r['record_p50_us']:.1f}", f"{r['record_p99_us']:.1f}",
                      f"{r['record_p50_us'] / base['record_p50_us']:.1f}x", f"{r['rows_per_s']:,.0f}")  # fmt: skip
    Console().print(table)
    env = machine(rows=args.rows)
    write_json("journal", {"env": env, "results": results})
    if not args.no_update:
        lines = ["## Request-log journal (`bench/journal.py`)", "",
                 f"{env['date']}, {env['cpu_count']} cores, {args.rows:,} rows per mode, SQLite log. "
                 "`record` runs before each response; the database write stays in the background.", "",
                 "| mode | record p50 (µs) | record p99 (µs) | p50 vs no journal | writer rows/s |",
                 "|---|---:|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r['mode']} | {r['record_p50_us']:.1f} | {r['record_p99_us']:.1f} | "
                  f"{r['record_p50_us'] / base['record_p50_us']:.1f}x | {r['rows_per_s']:,.0f} |" for r in results]
        update_results("journal", "\n".join(lines))


if __name__ == "__main__":
    main()
