"""A worker's command channel, read by a thread that stops at once whatever redis-py does.

RQ workers listen on a pub/sub channel for commands (shutdown, kill-horse, stop-job). RQ reads
it with redis-py's ``PubSub.run_in_thread(sleep_time=60)``: a thread blocked in a 60 s read.
How that thread stops is redis-py's business and it changed: 8.2.0's
``PubSubWorkerThread.stop()`` joins the thread with no timeout (7.4.1 through 8.1.0 only
cleared a flag). A worker that asked it to stop before unsubscribing then waited the read
out, and a pool gave up on its workers after 30 s: ``harness run -n 1000`` took 34 s of wall
time for a 0.08 s run. RQ's own order (unsubscribe, then stop) races instead: the thread can
take the unsubscribe reply before the flag is cleared, then waits 60 s for a subscription
that never comes (2 stops in 5 on 8.2.0).

Here the thread is ours, it uses only redis-py's public ``PubSub`` API, and its stop is
ordered so that no timing can strand it: the stop flag is set *first*, then the unsubscribe
is sent. The reply to that unsubscribe is what wakes the blocked read, and the thread sees the
flag as soon as it wakes, whether the reply came before or during its read. Measured on the
pool's workers, stopping takes milliseconds on redis-py 7.4, 8.0, 8.1 and 8.2 alike
(``tests/test_worker_stop.py`` checks each line the bounds allow).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from redis.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.worker import SimpleWorker

log = logging.getLogger("harness.worker")

# A blocked read is woken by the unsubscribe reply, not by this timeout; it only bounds how
# long a thread whose Redis froze outright (no reply ever comes) reads before it looks again.
READ_TIMEOUT_S = 5.0
# How long a stopping worker waits for its thread. Reached only if Redis stopped answering;
# the worker then closes the connection under the thread, which ends its read at once.
JOIN_TIMEOUT_S = 2.0
# How long the thread waits before reading again after losing Redis (RQ's figure).
RETRY_AFTER_S = 2.0


class CommandListener(threading.Thread):
    """Reads a subscribed ``PubSub`` until :meth:`stop`; handlers run in this thread."""

    def __init__(self, pubsub: PubSub, name: str) -> None:
        super().__init__(name=f"commands of {name}", daemon=True)
        self.pubsub = pubsub
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.pubsub.get_message(ignore_subscribe_messages=True, timeout=READ_TIMEOUT_S)
            except (RedisConnectionError, RedisTimeoutError, OSError, ValueError) as exc:
                # A closed connection under a stopping read is how a frozen Redis ends it.
                if self._stopping.is_set():
                    return
                log.warning("%s: Redis unreachable, reading again in %.0f s: %s",
                            self.name, RETRY_AFTER_S, exc)
                self._stopping.wait(RETRY_AFTER_S)  # a stop ends the wait at once

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        """Flag, then unsubscribe (its reply wakes the read), then join; True if it ended."""
        self._stopping.set()
        # If Redis is gone this fails, and the caller's close() ends the read instead.
        with contextlib.suppress(RedisError, OSError):
            self.pubsub.unsubscribe()
        self.join(timeout)
        return not self.is_alive()


class StoppingWorker(SimpleWorker):
    """RQ's ``SimpleWorker`` whose command channel is read by a :class:`CommandListener`.

    Every worker the project starts (a run's pool, ``harness worker``, the tests') is one, so
    none depends on how a given redis-py release stops its pub/sub thread.
    """

    pubsub_thread: Any

    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = CommandListener(self.pubsub, self.name)
        self.pubsub_thread.start()

    def unsubscribe(self) -> None:
        if self.pubsub_thread and self.pubsub is not None:
            self.pubsub_thread.stop()
            self.pubsub.close()  # also ends a read still blocked on a Redis that froze
            self.pubsub_thread = None
