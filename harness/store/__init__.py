"""Where orders and run records live: the store the settings choose (PostgreSQL for
DATABASE_URL, MongoDB for MONGO_URI, else embedded SQLite), opened through one registry.

Which backend is :func:`harness.config.backend_of`'s to decide; how each is opened is
registered here, one line each (with the extra its driver comes from). A new backend is its
module, its line here, its setting in config.py and its extra.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.config import Settings
from harness.store.base import DuplicateOrderError, Fence, Store, StoreError, Tally, Window

__all__ = ["BACKENDS", "DuplicateOrderError", "Fence", "Store", "StoreError", "Tally", "Window",
           "open_store", "sqlite_path"]


def sqlite_path(settings: Settings) -> str:
    return str(settings.data_dir / "harness.sqlite3")


def _sqlite(settings: Settings) -> Store:
    from harness.paths import data_dir
    from harness.store.sqlite import SQLiteStore

    data_dir(settings)  # a regular file there is the user's to fix: ConfigError, not StoreError
    return SQLiteStore(sqlite_path(settings), settings.store_timeout_s)


def _mongo(settings: Settings) -> Store:
    from harness.store.mongo import MongoStore

    assert settings.mongo_uri is not None
    return MongoStore(settings.mongo_uri, settings.mongo_db, settings.store_timeout_s)


def _postgres(settings: Settings) -> Store:
    from harness.store.postgres import PostgresStore

    assert settings.database_url is not None
    return PostgresStore(settings.database_url, settings.store_timeout_s)


@dataclass(frozen=True)
class Backend:
    """How a backend's store is opened, and the driver module it needs (with its extra)."""

    opener: Callable[[Settings], Store]
    driver: str | None = None  # a module of an extra; None for the standard library


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend(_sqlite),
    "mongo": Backend(_mongo, "pymongo"),
    "postgres": Backend(_postgres, "psycopg"),
}


def open_store(settings: Settings) -> Store:
    """Open the store the settings name. Raises StoreError, with a redacted message; a
    missing driver is MissingExtra (one line naming the extra)."""
    backend = BACKENDS[settings.backend]
    if backend.driver is not None:
        from harness.extras import require

        require(backend.driver)
    return backend.opener(settings)
