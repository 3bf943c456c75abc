"""What every route needs: the server's settings, its Redis client and its shared reads."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from harness.api.live import LogHub, SharedReads, StatusHub
from harness.config import Settings


@dataclass(frozen=True)
class Context:
    """The server's settings (runs it starts take these, with the request's changes), one
    Redis client whose connection pool every request thread shares, and the status snapshot,
    log follower and other reads every client of this server shares."""

    settings: Settings
    conn: Redis
    status_hub: StatusHub
    log_hub: LogHub
    shared: SharedReads

    @classmethod
    def of(cls, settings: Settings, conn: Redis) -> Context:
        return cls(settings, conn, StatusHub(conn, settings.redis_address), LogHub(conn),
                   SharedReads())
