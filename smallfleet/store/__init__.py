"""The gateway's database: request log and cost ledger, client API keys, human review queue.

SQLite (WAL) by default, any SQLAlchemy URL (PostgreSQL included) otherwise, so several
gateway instances can share one log. The schema changes only through the numbered
migrations in `migrations.py`.
"""

from smallfleet.store.db import Database, database_url

__all__ = ["Database", "database_url"]
