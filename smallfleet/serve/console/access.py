"""Who may use the console, and what they may do.

Signing in with an API key starts a server-side session, stored in the database so that every
worker and replica knows it (`store/sessions.py`): the browser gets only a random session token, in an HttpOnly, SameSite=Strict cookie (scripts cannot read it, other sites
cannot send it); the key itself is never stored, echoed or logged. Each session carries its
own CSRF token, which every form posts back. A session follows its key: revoking the key
ends it within the key check's refresh interval, and a changed role applies at once.

Roles (see `store/keys.py`): `reviewer` answers reviews, `admin` also promotes and rolls
back; a `client` key only calls the API and cannot sign in. A gateway without keys has an
open console (everyone an admin) only while it is bound to loopback; otherwise the console
stays closed until a key exists.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field

from smallfleet.serve.keycheck import KeyCheck
from smallfleet.store import sessions

COOKIE = "smallfleet_console"
SIGNIN_COOKIE = "smallfleet_signin"
"""Holds the sign-in form's CSRF token until the session starts (double-submit)."""
SESSION_SECONDS = 12 * 3600
CONSOLE_ROLES = ("reviewer", "admin")
MAY = {"review": {"reviewer", "admin"}, "promote": {"admin"}}
"""Action -> the roles that may do it."""


class AccessError(Exception):
    """The caller may not do this: `status` 401 (sign in), 403 (not with this role, closed console, bad CSRF token)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    name: str | None
    """The key's name; None on an open console (no keys)."""
    role: str
    key_hash: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    expires: float = field(default_factory=lambda: time.time() + SESSION_SECONDS)
    """Seconds since the epoch."""

    def may(self, action: str) -> bool:
        return self.role in MAY[action]


class ConsoleAccess:
    """Console sessions, in the gateway's database (they outlive a restart, and every worker and replica shares
    them). Each method reads or writes the database: call them off the event loop."""

    def __init__(self, keys: KeyCheck, open_without_keys: bool):
        """
        Args:
            keys: the gateway's key check.
            open_without_keys: whether the console is open to all when no key exists (bound to loopback only).
        """
        self.keys = keys
        self.open_without_keys = open_without_keys

    def keys_required(self) -> bool:
        return self.keys.keys()[1]

    def sign_in(self, key: str) -> tuple[str, Session]:
        """A new session (token, session) for the active key `key`.

        Raises:
            AccessError: 401 unknown or revoked key; 403 a key whose role cannot use the console.
        """
        found = self.keys.find(key) if key.strip() else None
        if found is None:
            raise AccessError(401, "unknown or revoked key")
        digest, name, role = found
        if role not in CONSOLE_ROLES:
            raise AccessError(403, f"key {name!r} has role {role!r}, which only calls the API; the console needs a "
                                   f"reviewer or admin key (smallfleet keys create DIR NAME --role reviewer)")  # fmt: skip
        return self._start(Session(name, role, digest))

    def sign_out(self, token: str | None) -> None:
        if token:
            sessions.end(self.keys.db, token)

    def open_session(self) -> tuple[str, Session] | None:
        """A new everyone-is-admin session when the console is open (no keys, loopback); else None."""
        if self.keys_required() or not self.open_without_keys:
            return None
        return self._start(Session(None, "admin"))

    def _start(self, session: Session) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        sessions.start(self.keys.db, token, session.name, session.role, session.key_hash, session.csrf,
                       session.expires)  # fmt: skip
        return token, session

    def session(self, token: str | None) -> Session | None:
        """The live session of cookie value `token`, following its key's current state; None when there is none.

        Raises:
            AccessError(403): no key exists and the gateway is not bound to loopback (the console is closed).
        """
        required = self.keys_required()
        if not required and not self.open_without_keys:
            raise AccessError(403, "the console is closed: this gateway listens beyond loopback and has no API key. "
                                   "Create one with `smallfleet keys create DIR NAME --role admin`.")  # fmt: skip
        row = sessions.find(self.keys.db, token) if token else None
        if row is None:
            return None
        found = Session(row["name"], row["role"], row["key_hash"], row["csrf"], row["expires_at"])
        if found.key_hash is None:  # an open-console session ends once keys are in use
            return None if required else found
        active = self.keys.keys()[0].get(found.key_hash)
        if active is None or active[1] not in CONSOLE_ROLES:
            sessions.end(self.keys.db, token)
            return None
        found.role = active[1]  # a changed role applies at once
        return found

    @staticmethod
    def check_csrf(session: Session, sent: str | None) -> None:
        """Raises AccessError(403) unless `sent` is the session's CSRF token."""
        if not sent or not hmac.compare_digest(sent, session.csrf):
            raise AccessError(403, "the form's security token is missing or stale: reload the page and try again")

    @staticmethod
    def require(session: Session, action: str) -> None:
        """Raises AccessError(403) unless the session's role may do `action` (see MAY)."""
        if not session.may(action):
            who = f"key {session.name!r} ({session.role})" if session.name else session.role
            raise AccessError(403, f"{who} may not {action}: that needs one of the roles {', '.join(sorted(MAY[action]))}")
