"""API-key checks for the gateway and its console: the active keys' hashes, read from the
database and refreshed every few seconds (so `keys revoke` takes effect within that)."""

from __future__ import annotations

import time

from smallfleet.serve.gateway import GatewayError
from smallfleet.store import Database
from smallfleet.store.keys import active_roles, hash_key, keys_required

KEY_REFRESH_SECONDS = 2.0


class KeyCheck:
    """Client-key verification against the hashes in the database, refreshed every few seconds."""

    def __init__(self, db: Database):
        self.db = db
        self._keys: dict[str, tuple[str, str]] = {}
        self._required = False
        self._loaded = 0.0

    def keys(self) -> tuple[dict[str, tuple[str, str]], bool]:
        """Active keys (hash -> (name, role)), and whether keys are required (once any was created; see store/keys.py)."""
        if time.monotonic() - self._loaded > KEY_REFRESH_SECONDS:
            self._keys, self._required = active_roles(self.db), keys_required(self.db)
            self._loaded = time.monotonic()
        return self._keys, self._required

    def check(self, header: str | None) -> str | None:
        """The key's name; None when keys are not in use. Raises GatewayError(401) for a missing or bad key."""
        return self.caller(header)[0]

    def caller(self, header: str | None) -> tuple[str | None, str | None]:
        """The key's name and role; (None, None) when keys are not in use. GatewayError(401) for a missing or bad key."""
        keys, required = self.keys()
        if not required:
            return None, None
        if not header or not header.startswith("Bearer "):
            raise GatewayError(401, "this gateway requires an API key: send 'Authorization: Bearer <key>'",
                               code="invalid_api_key")  # fmt: skip
        found = keys.get(hash_key(header[7:].strip()))
        if found is None:
            raise GatewayError(401, "invalid or revoked API key", code="invalid_api_key")
        return found

    def find(self, key: str) -> tuple[str, str, str] | None:
        """(hash, name, role) of the active key `key`; None when it is unknown or revoked."""
        digest = hash_key(key.strip())
        found = self.keys()[0].get(digest)
        return None if found is None else (digest, *found)
