"""Client API keys: created once (shown only then), stored as SHA-256 hashes, revocable.

Keys are 32 random bytes, so a plain SHA-256 is enough (no password-style stretching is
needed: there is nothing to brute-force). The gateway asks for a key only when at least
one active key exists.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from smallfleet.errors import ConfigError
from smallfleet.store.db import Database

PREFIX = "sf-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(db: Database, name: str) -> str:
    """Create a key called `name` and return it; only its hash is stored."""
    key = PREFIX + secrets.token_urlsafe(32)
    row = {"name": name, "prefix": key[:10], "key_hash": hash_key(key), "created_at": datetime.now(UTC)}
    try:
        with db.engine.begin() as conn:
            conn.execute(db.api_keys.insert().values(**row))
    except IntegrityError:
        raise ConfigError(f"a key called {name!r} already exists; pick another name or revoke it first") from None
    return key


def list_keys(db: Database) -> list[dict]:
    k = db.api_keys
    with db.engine.connect() as conn:
        rows = conn.execute(select(k.c.name, k.c.prefix, k.c.created_at, k.c.revoked_at).order_by(k.c.id))
        return [dict(r._mapping) for r in rows]


def revoke_key(db: Database, name: str) -> None:
    k = db.api_keys
    with db.engine.begin() as conn:
        done = conn.execute(
            k.update().where(k.c.name == name, k.c.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC))
        )
    if done.rowcount == 0:
        raise ConfigError(f"no active key called {name!r}")


def active_keys(db: Database) -> dict[str, str]:
    """hash -> key name for every key not revoked."""
    k = db.api_keys
    with db.engine.connect() as conn:
        return {h: n for h, n in conn.execute(select(k.c.key_hash, k.c.name).where(k.c.revoked_at.is_(None)))}
