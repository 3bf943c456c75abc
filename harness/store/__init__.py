"""Where orders and run records live: MongoDB when MONGO_URI is set, else embedded SQLite."""

from __future__ import annotations

from harness.config import Settings
from harness.store.base import DuplicateOrderError, Fence, Store, StoreError, Tally, Window

__all__ = ["DuplicateOrderError", "Fence", "Store", "StoreError", "Tally", "Window", "open_store",
           "sqlite_path"]


def sqlite_path(settings: Settings) -> str:
    return str(settings.data_dir / "harness.sqlite3")


def open_store(settings: Settings) -> Store:
    """Open the store the settings name. Raises StoreError, with a redacted message."""
    if settings.mongo_uri:
        from harness.extras import require

        require("pymongo")
        from harness.store.mongo import MongoStore

        return MongoStore(settings.mongo_uri, settings.mongo_db, settings.store_timeout_s)
    from harness.paths import data_dir
    from harness.store.sqlite import SQLiteStore

    data_dir(settings)  # a regular file there is the user's to fix: ConfigError, not StoreError
    return SQLiteStore(sqlite_path(settings), settings.store_timeout_s)
