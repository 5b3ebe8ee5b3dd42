"""Which :class:`~entropy_sentinel.monitor.store.RecordStore` the configuration asks for.

``store.url`` (``postgresql://...``) -> :class:`~entropy_sentinel.monitor.postgres_store.PostgresStore`,
shared by every replica; else ``store.path`` -> the embedded
:class:`~entropy_sentinel.monitor.sqlite_store.SQLiteStore`; both empty -> no store. The settings
come as any object with the ``store`` section's fields (``config.StoreConfig``), so ``monitor``
needs nothing of ``config``.
"""

from __future__ import annotations

from typing import Protocol

from entropy_sentinel.monitor.sqlite_store import SQLiteStore
from entropy_sentinel.monitor.store import RecordStore
from entropy_sentinel.optional import require

__all__ = ["StoreSettings", "open_store"]


class StoreSettings(Protocol):
    @property
    def url(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def flush_interval_s(self) -> float: ...

    @property
    def retention_days(self) -> float: ...


def open_store(settings: StoreSettings) -> RecordStore | None:
    """The configured store, opened (PostgreSQL: connected, schema migrated), or None."""
    if settings.url:
        require("postgres", what="store.url (the PostgreSQL record store)")
        from entropy_sentinel.monitor.postgres_store import PostgresStore  # psycopg only when asked for

        return PostgresStore(settings.url, settings.batch_size, settings.flush_interval_s, settings.retention_days)
    if settings.path:
        return SQLiteStore(settings.path, settings.batch_size, settings.flush_interval_s, settings.retention_days)
    return None
