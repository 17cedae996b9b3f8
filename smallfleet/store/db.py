"""Opening the gateway database: URL resolution, SQLite pragmas, migrations, table handles."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, MetaData, create_engine, event

from smallfleet.forking import renew_after_fork
from smallfleet.store.migrations import migrate

DB_FILE = "smallfleet.db"


def database_url(fleet_dir: Path | None = None, url: str | None = None) -> str:
    """The database to use: `url`, else $SMALLFLEET_DB, else SQLite `smallfleet.db` in the fleet folder."""
    if url:
        return url
    if os.environ.get("SMALLFLEET_DB"):
        return os.environ["SMALLFLEET_DB"]
    folder = fleet_dir if fleet_dir is not None else Path(".")
    return f"sqlite:///{(folder / DB_FILE).resolve()}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers (logs, costs) never block the gateway's writer
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes, fast commits
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


class Database:
    """An engine on the gateway database, migrated to the latest schema, with its tables reflected."""

    def __init__(self, url: str):
        self.url = url
        self.engine: Engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.applied_now = migrate(self.engine)
        meta = MetaData()
        meta.reflect(self.engine, only=["requests", "api_keys", "reviews", "judgements", "shadow", "key_usage",
                                        "requests_hourly", "console_sessions"])
        self.requests = meta.tables["requests"]
        self.api_keys = meta.tables["api_keys"]
        self.reviews = meta.tables["reviews"]
        self.judgements = meta.tables["judgements"]
        self.shadow = meta.tables["shadow"]
        self.key_usage = meta.tables["key_usage"]
        self.requests_hourly = meta.tables["requests_hourly"]
        self.console_sessions = meta.tables["console_sessions"]
        renew_after_fork(self)

    def after_fork(self) -> None:
        """A forked worker (`serve --workers`) opens connections of its own; the parent's stay the parent's."""
        self.engine.dispose(close=False)

    @property
    def shareable(self) -> bool:
        """Whether another process can open this database by its URL (not so a SQLite database in memory)."""
        return self.url not in ("sqlite://", "sqlite:///:memory:")

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)})"
