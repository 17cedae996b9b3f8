"""The request log's local journal: every row is appended to a file before the response goes out.

The ledger writes rows to the database in the background, so a response never waits for a
database round-trip. Between the response and that write a row lives only in memory; a
`kill -9` or a crash there would lose it. The journal closes that gap: `Ledger.record`
appends the row to an append-only file first (a `write()`, plus an `fsync` when
`serving.journal_fsync` asks for power-loss safety), and a segment file is deleted once
every row in it is in the database.

Each gateway process owns one folder under `<fleet>/.journal/`, locked with `flock` while
it runs. At start-up a gateway replays the folders whose owner is gone (the lock is free):
rows whose `request_id` is already in the database are skipped, the rest are inserted, then
the folder is removed. A replay that itself crashes leaves the files in place, so the next
start-up finishes it: the replay is exactly-once (see `Ledger._replay`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import uuid
from datetime import datetime
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("smallfleet.journal")
JOURNAL_FOLDER = ".journal"
"""Where a fleet folder keeps its gateways' journals."""
SEGMENT_ROWS = 2000
"""Rows per segment file; a segment is deleted as soon as all its rows are in the database."""


def _encode(value):
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    return repr(value)


def _decode(obj: dict):
    if set(obj) == {"$datetime"}:
        return datetime.fromisoformat(obj["$datetime"])
    return obj


class Journal:
    """This process's journal: append rows, say which are in the database, replay dead owners' rows."""

    def __init__(self, root: Path, database: str, fsync: bool = False):
        """Open a new journal folder under `root` (created if missing) and lock it for this process.

        Args:
            root: The journal folder of a fleet (`<fleet>/.journal`).
            database: The request log's URL; a journal is replayed only into the database it was written for.
            fsync: Flush each row to the disk itself (survives power loss; costs a disk sync per request).
        """
        self.root = Path(root)
        self.database = database_id(database)
        self.fsync = fsync
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        making = self.root / f".{name}"  # locked and labelled before it appears under its name: never taken for dead
        making.mkdir(parents=True)
        self._lock_file = open(making / "lock", "w")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (making / "database").write_text(self.database)
        self.folder = making.rename(self.root / name)
        self._mutex = threading.Lock()
        self._seq = 0  # rows appended so far
        self._segments: list[tuple[int, Path]] = []  # (last seq written to it, file), oldest first
        self._file = None
        self._rows_in_segment = 0

    def append(self, row: dict) -> int:
        """Write `row` to the journal before anything else happens to it; returns its sequence number."""
        line = json.dumps(row, default=_encode, ensure_ascii=True) + "\n"
        with self._mutex:
            if self._file is None or self._rows_in_segment >= SEGMENT_ROWS:
                self._open_segment()
            self._seq += 1
            self._file.write(line)
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
            self._rows_in_segment += 1
            self._segments[-1] = (self._seq, self._segments[-1][1])
            return self._seq

    def stored(self, seq: int) -> None:
        """Every row up to sequence number `seq` is in the database (or, failing that, in the server log)."""
        with self._mutex:
            while len(self._segments) > 1 and self._segments[0][0] <= seq:  # full segments: delete
                self._segments.pop(0)[1].unlink(missing_ok=True)
            if self._segments and self._seq <= seq and self._file is not None:  # the open one: empty it
                self._file.truncate(0)
                self._rows_in_segment = 0

    def close(self) -> None:
        """Release the lock; the folder goes too when every row reached the database."""
        with self._mutex:
            if self._file is not None:
                self._file.close()
                self._file = None
            empty = not any(path.stat().st_size for path in self.folder.glob("*.jsonl"))
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
        if empty:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _open_segment(self) -> None:
        if self._file is not None:
            self._file.close()
        path = self.folder / f"{self._seq + 1:012d}.jsonl"
        self._file = open(path, "a", encoding="ascii")
        self._segments.append((self._seq, path))
        self._rows_in_segment = 0


def database_id(url: str) -> str:
    """A short fingerprint of a database URL (the URL itself may hold a password)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def orphans(root: Path, database: str) -> Iterator[list[dict]]:
    """The rows of each journal under `root` whose gateway is gone (its lock is free), one folder at a time.

    A folder is removed only when the caller asks for the next one, after storing these rows; a caller that
    fails leaves it for the next start-up.

    Args:
        root: A fleet's journal folder; missing is fine (nothing to replay).
        database: The request log's URL: journals written for another database are left for its gateway.
    """
    root = Path(root)
    if not root.is_dir():
        return
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        marker = folder / "database"
        if marker.exists() and marker.read_text().strip() != database_id(database):
            continue
        with open(folder / "lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # its gateway is running: its own writer stores the rows
                continue
            rows = [row for segment in sorted(folder.glob("*.jsonl")) for row in _read(segment)]
            yield rows
        shutil.rmtree(folder, ignore_errors=True)


def _read(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines(), 1):
        try:
            rows.append(json.loads(line, object_hook=_decode))
        except json.JSONDecodeError:  # the last line of a killed writer may be cut short: it got no response
            log.warning("journal %s line %d is incomplete and was skipped", path, number)
    return rows
