"""Console sessions, kept in the database so every worker and replica of a gateway knows them.

Only the SHA-256 of a session's token is stored, as for API keys: the token itself lives in
the browser's cookie alone.
"""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import delete, select

from smallfleet.store.db import Database


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(db: Database, token: str, name: str | None, role: str, key_hash: str | None, csrf: str,
          expires_at: float) -> None:  # fmt: skip
    """Store a new session, and drop the expired ones."""
    t = db.console_sessions
    with db.engine.begin() as conn:
        conn.execute(delete(t).where(t.c.expires_at < time.time()))
        conn.execute(t.insert().values(token_hash=_digest(token), name=name, role=role, key_hash=key_hash, csrf=csrf,
                                       expires_at=expires_at))  # fmt: skip


def find(db: Database, token: str) -> dict | None:
    """The unexpired session of `token` (name, role, key_hash, csrf, expires_at); None when there is none."""
    t = db.console_sessions
    with db.engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.token_hash == _digest(token), t.c.expires_at >= time.time())).first()
    return None if row is None else dict(row._mapping)


def end(db: Database, token: str) -> None:
    t = db.console_sessions
    with db.engine.begin() as conn:
        conn.execute(delete(t).where(t.c.token_hash == _digest(token)))
