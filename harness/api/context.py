"""What every route needs: the server's settings and its Redis client."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from harness.config import Settings


@dataclass(frozen=True)
class Context:
    """The server's settings (runs it starts take these, with the request's changes) and one
    Redis client whose connection pool every request thread shares."""

    settings: Settings
    conn: Redis
