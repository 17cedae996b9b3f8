"""Client API keys: created once (shown only then), stored as SHA-256 hashes, revocable.

Keys are 32 random bytes, so a plain SHA-256 is enough (no password-style stretching is
needed: there is nothing to brute-force).

A fresh gateway is open. Once any key has been created it requires one, and revoking every
key does not open it again (a revoked key row still says "keys are in use"): only
`open_gateway`, the operator's explicit `smallfleet keys open`, does, by forgetting the
revoked keys. So no schema change is needed to tell "never used keys" from "revoked them all".
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from smallfleet.errors import ConfigError
from smallfleet.store.db import Database
from smallfleet.store.limits import KeyLimits, create_counters

PREFIX = "sf-"
ROLES = ("client", "reviewer", "admin")
"""What a key may do: clients call the API (and give feedback on their own requests); reviewers also answer
reviews; admins may do everything, feedback on any request included."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(db: Database, name: str, role: str = "client", limits: KeyLimits | None = None) -> str:
    """Create a key called `name` and return it; only its hash is stored.

    Args:
        db: The gateway database.
        name: The key's name (unique).
        role: What the key may do (see ROLES).
        limits: Its budget and rate limits (see store/limits.py); none by default.
    """
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    limits = limits or KeyLimits()
    key = PREFIX + secrets.token_urlsafe(32)
    row = {"name": name, "prefix": key[:10], "key_hash": hash_key(key), "created_at": datetime.now(UTC), "role": role,
           "budget_usd": limits.budget_usd, "rpm": limits.rpm, "tpm": limits.tpm, "budget_period": limits.period}
    try:
        with db.engine.begin() as conn:
            (key_id,) = conn.execute(db.api_keys.insert().values(**row)).inserted_primary_key
            create_counters(conn, db, key_id)
    except IntegrityError:
        raise ConfigError(f"a key called {name!r} already exists; pick another name or revoke it first") from None
    return key


def _limits(row) -> KeyLimits:
    return KeyLimits(budget_usd=row.budget_usd, rpm=row.rpm, tpm=row.tpm, period=row.budget_period or "month")


def list_keys(db: Database) -> list[dict]:
    """Every key's name, role, first characters, creation and revocation times, and `limits` (KeyLimits)."""
    k = db.api_keys
    with db.engine.connect() as conn:
        rows = conn.execute(select(k).order_by(k.c.id))
        return [{"id": r.id, "name": r.name, "role": r.role, "prefix": r.prefix, "created_at": r.created_at,
                 "revoked_at": r.revoked_at, "limits": _limits(r)} for r in rows]  # fmt: skip


def key_limits(db: Database) -> dict[str, tuple[int, KeyLimits]]:
    """key name -> (key id, its limits) for every active key that has a limit."""
    k = db.api_keys
    query = select(k).where(k.c.revoked_at.is_(None))
    with db.engine.connect() as conn:
        found = {r.name: (r.id, _limits(r)) for r in conn.execute(query)}
    return {name: (key_id, limits) for name, (key_id, limits) in found.items() if limits.any}


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
    return {h: name for h, (name, _role) in active_roles(db).items()}


def active_roles(db: Database) -> dict[str, tuple[str, str]]:
    """hash -> (key name, role) for every key not revoked."""
    k = db.api_keys
    with db.engine.connect() as conn:
        query = select(k.c.key_hash, k.c.name, k.c.role).where(k.c.revoked_at.is_(None))
        return {h: (n, r) for h, n, r in conn.execute(query)}


def keys_required(db: Database) -> bool:
    """True once any key exists, revoked or not: the gateway then asks every request for an active key."""
    k = db.api_keys
    with db.engine.connect() as conn:
        return conn.execute(select(k.c.id).limit(1)).first() is not None


def open_gateway(db: Database) -> list[str]:
    """Let the gateway answer requests without a key again by forgetting every revoked key; their names.

    Raises:
        ConfigError: a key is still active (the gateway would stay closed).
    """
    k = db.api_keys
    with db.engine.begin() as conn:
        active = [n for (n,) in conn.execute(select(k.c.name).where(k.c.revoked_at.is_(None)).order_by(k.c.id))]
        if active:
            which = f"key {active[0]!r} is" if len(active) == 1 else f"keys {', '.join(map(repr, active))} are"
            raise ConfigError(f"{which} still active: revoke every key before opening the gateway")
        names = [n for (n,) in conn.execute(select(k.c.name).order_by(k.c.id))]
        # only revoked rows go: a key created meanwhile by another process stays, and keeps the gateway closed
        revoked = select(k.c.id).where(k.c.revoked_at.is_not(None))
        conn.execute(db.key_usage.delete().where(db.key_usage.c.key_id.in_(revoked)))
        conn.execute(k.delete().where(k.c.revoked_at.is_not(None)))
    return names
