"""Console access rules on a real database (no model, no server): who may sign in, when the console is open
without keys, sessions following their key, CSRF tokens and roles."""

from __future__ import annotations

import pytest

from smallfleet.serve.console.access import AccessError, ConsoleAccess
from smallfleet.serve.keycheck import KeyCheck
from smallfleet.store import Database
from smallfleet.store.keys import create_key, revoke_key


@pytest.fixture
def db(tmp_path):
    return Database(f"sqlite:///{tmp_path / 'log.db'}")


def fresh(access: ConsoleAccess) -> ConsoleAccess:
    access.keys._loaded = 0.0  # read the keys table again now instead of within KEY_REFRESH_SECONDS
    return access


def test_without_keys_the_console_is_open_on_loopback_only(db):
    open_access = ConsoleAccess(KeyCheck(db), open_without_keys=True)
    token, session = open_access.open_session()
    assert session.role == "admin" and session.name is None and open_access.session(token).csrf == session.csrf
    closed = ConsoleAccess(KeyCheck(db), open_without_keys=False)
    assert closed.open_session() is None
    with pytest.raises(AccessError) as refused:
        closed.session(None)
    assert refused.value.status == 403 and "keys create" in str(refused.value)

    create_key(db, "boss", "admin")  # once a key exists the open session ends and no new one opens
    assert fresh(open_access).session(token) is None and open_access.open_session() is None


def test_sign_in_needs_an_active_reviewer_or_admin_key_and_the_session_follows_it(db):
    keys = {role: create_key(db, role, role) for role in ("client", "reviewer", "admin")}
    access = ConsoleAccess(KeyCheck(db), open_without_keys=True)
    for key, status in (("sf-wrong", 401), ("", 401), (keys["client"], 403)):
        with pytest.raises(AccessError) as refused:
            access.sign_in(key)
        assert refused.value.status == status
    token, session = access.sign_in(keys["reviewer"])
    assert session.name == "reviewer" and keys["reviewer"] not in (token, session.csrf, session.key_hash)
    assert session.may("review") and not session.may("promote")
    with pytest.raises(AccessError) as refused:
        access.require(session, "promote")
    assert refused.value.status == 403
    admin_token, admin = access.sign_in(keys["admin"])
    access.require(admin, "promote")

    with pytest.raises(AccessError):
        access.check_csrf(session, None)
    with pytest.raises(AccessError):
        access.check_csrf(session, admin.csrf)  # another session's token
    access.check_csrf(session, session.csrf)

    revoke_key(db, "reviewer")
    assert fresh(access).session(token) is None and access.session(admin_token).csrf == admin.csrf
    access.sign_out(admin_token)
    assert access.session(admin_token) is None


def test_a_session_is_known_to_every_worker_and_replica_on_the_database(db, tmp_path):
    """`serve --workers N` and replicas behind a load balancer: a browser signed in on one process is signed in
    on all of them, sign-out ends it everywhere, and the token is stored only as its hash."""
    key = create_key(db, "lead", "reviewer")
    first, second = (ConsoleAccess(KeyCheck(Database(db.url)), open_without_keys=False) for _ in range(2))
    token, session = first.sign_in(key)
    seen = second.session(token)
    assert (seen.name, seen.role, seen.csrf) == ("lead", "reviewer", session.csrf)
    second.check_csrf(seen, session.csrf)
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("log.db*"))  # the database and its WAL
    assert session.csrf.encode() in stored and token.encode() not in stored
    second.sign_out(token)
    assert first.session(token) is None
