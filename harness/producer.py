"""Generating and storing a run's orders: two processes on alternate chunks, stored in order.

Why: generation is CPU (1M orders: 1.6 s in Python, 0.6 s vectorized) and, in one process,
serial with the inserts (4.4 s of store floor): a 1M run spent 1.6 s generating while the
store waited. A thread does not help (``executemany`` binds rows under the GIL: measured, the
inserts slowed by as much as generation was hidden). So a second process, forked from the
coordinator, makes every other chunk: while one process inserts chunk k, the other generates
chunk k+1.

Chunks are still stored strictly in order, each in one transaction: a process inserts its
chunk only once the one before is committed (the coordinator says "go" to the helper; the
helper reports each chunk it committed). What a run that stopped has stored is therefore a
whole prefix of chunks with at most a partial tail, as a resume expects
(:mod:`harness.resume`). The helper writes under the run's fence like any process, dies
with the coordinator (SIGTERM on its death), and is stopped when the generation ends in any
way (done, cancelled, failed). Its errors reach the coordinator as the store errors they were.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from harness.config import Settings
from harness.errors import RunFailed, StaleRun, StoreError
from harness.orders import VIP, ChunkMaker, chunk_maker
from harness.redaction import redact
from harness.store import Fence, Store, open_store

# Below this many chunks the helper's start (a fork, its store connection: ~10 ms) buys
# little; the run generates alone, as before.
MIN_CHUNKS = 4
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Inserted:
    """One chunk, committed: its place, its VIP seqs and what it cost, in whichever process."""

    start: int
    count: int
    vip: list[int]
    generate_s: float
    insert_s: float


@contextlib.contextmanager
def collections_paused() -> Iterator[None]:
    """No automatic garbage collection while orders are made and stored.

    Why: a chunk is 10,000 new tuples, and CPython's collector runs every 700 new container
    objects, now and then over the whole heap; none of that frees anything here (an order
    holds only strings and numbers, so it cannot be in a cycle; the chunk goes when its
    insert is done, by reference count). Measured, 1M orders generated in a process with
    the coordinator's modules loaded: 1.80-1.93 s of CPU with collections, 1.43-1.47 s
    without. Cyclic garbage that the rest of the process makes meanwhile waits for the first
    collection after (a 1M run: 14 objects). The state is restored however the block ends."""
    was = gc.isenabled()
    try:
        gc.disable()
        yield
    finally:
        if was:
            gc.enable()


def inserted_chunks(store: Store, settings: Settings, seed: int, fence: Fence, first: int,
                    weights: Sequence[float], started: Callable[[int], None] = lambda pid: None,
                    ) -> Generator[list[Inserted], None, None]:
    """The run's chunks from order ``first``, in order, each once it is committed: a step
    yields one or two. The caller must close the iterator (``contextlib.closing``), which
    stops the helper; ``started`` is given the helper's pid (the run samples its memory).

    Each step ends with a store write of this process (fenced), and the caller's own writes
    (enqueueing, the live state) come after it: so a coordinator that was paused and is no
    longer the run's owner learns it from the store, writing nothing, as it did alone. That
    is why the last chunk is always the coordinator's."""
    with collections_paused():
        yield from _chunks(store, settings, seed, fence, first, weights, started)


def _chunks(store: Store, settings: Settings, seed: int, fence: Fence, first: int,
            weights: Sequence[float], started: Callable[[int], None],
            ) -> Generator[list[Inserted], None, None]:
    """:func:`inserted_chunks`, collections not paused."""
    starts = list(range(first, settings.quantity, settings.chunk_size))
    size = settings.chunk_size
    generate_chunk = chunk_maker(settings.quantity)  # before the fork: the helper inherits it

    def make(start: int) -> tuple[list[Any], float]:
        t = time.perf_counter()
        chunk = generate_chunk(seed, start, min(size, settings.quantity - start), weights)
        return chunk, time.perf_counter() - t

    def insert(made: tuple[list[Any], float], start: int) -> Inserted:
        t = time.perf_counter()
        store.insert_orders(made[0])
        return Inserted(start, len(made[0]), [o.seq for o in made[0] if o.priority == VIP],
                        made[1], time.perf_counter() - t)

    if len(starts) < MIN_CHUNKS:
        for start in starts:
            yield [insert(make(start), start)]
        return
    n = len(starts)
    helpers = set(range(1, n - 1, 2))  # every other chunk, but never the last: see above
    here, there = multiprocessing.get_context("fork").Pipe()
    helper = multiprocessing.get_context("fork").Process(
        target=_helper, name="harness-generator", daemon=True,
        args=(there, here, os.getpid(), settings, seed, fence, [starts[i] for i in sorted(helpers)],
              weights, generate_chunk))
    helper.start()
    there.close()
    started(helper.pid or 0)
    try:
        mine, theirs, k = make(starts[0]), list[Inserted](), 0
        while k < n:  # chunk k is ours
            done = insert(mine, starts[k])
            if k + 1 in helpers:
                _go(here, helper, starts[k + 1])  # chunk k is committed: the helper's turn
                yield [*theirs, done]
                mine = make(starts[k + 2])  # while the helper inserts chunk k + 1
                theirs = [_receive(here, helper, starts[k + 1])]
                k += 2
            else:
                yield [*theirs, done]
                theirs = []
                if k + 1 < n:
                    mine = make(starts[k + 1])
                k += 1
    finally:
        _stop(helper, here)


def _died(helper: Any, start: int) -> RunFailed:
    helper.join(STOP_TIMEOUT_S)
    return RunFailed(f"the generator process died (exit code {helper.exitcode}) before "
                     f"storing the chunk at order {start:,}; `harness resume` generates the rest")


def _go(conn: Connection, helper: Any, start: int) -> None:
    """Tell the helper to insert its chunk at ``start``."""
    try:
        conn.send(True)
    except OSError:  # a broken pipe: it is gone
        raise _died(helper, start) from None


def _receive(conn: Connection, helper: Any, start: int) -> Inserted:
    """The helper's report on chunk ``start``; its error raised here, as it was raised there."""
    try:
        message = conn.recv()
    except (EOFError, OSError):
        raise _died(helper, start) from None
    if isinstance(message, Inserted):
        assert message.start == start, (message.start, start)
        return message
    kind, text = message
    raise StaleRun(text) if kind == "stale" else StoreError(redact(text))


def _stop(helper: Any, conn: Connection) -> None:
    """End the helper: at once if it is waiting or inserting (a chunk it is inserting is
    rolled back with its transaction), and wait for it."""
    conn.close()
    if helper.is_alive():
        helper.terminate()
    helper.join(STOP_TIMEOUT_S)
    if helper.is_alive():
        helper.kill()
        helper.join()


def _helper(conn: Connection, parents_end: Connection, parent: int, settings: Settings,
            seed: int, fence: Fence, starts: list[int], weights: Sequence[float],
            generate_chunk: ChunkMaker) -> None:
    """The helper process: make each of its chunks, wait for its turn, insert it, report."""
    from harness.worker import tie_to_parent

    parents_end.close()  # so that the coordinator's end closing (its death too) is an EOF here
    # SIGTERM (the coordinator's death, or its stop) ends this process; a Ctrl-C is the
    # coordinator's to handle.
    if not tie_to_parent(parent, on_interrupt=signal.SIG_IGN):
        return
    store: Store | None = None
    gc.disable()  # see collections_paused: this process only makes and stores orders
    try:
        store = open_store(settings)  # its own connection: none crosses the fork
        store.bind(fence)
        for start in starts:
            t = time.perf_counter()
            chunk = generate_chunk(seed, start, min(settings.chunk_size, settings.quantity - start),
                                   weights)
            generate_s = time.perf_counter() - t
            if not conn.recv():
                return
            t = time.perf_counter()
            store.insert_orders(chunk)
            conn.send(Inserted(start, len(chunk), [o.seq for o in chunk if o.priority == VIP],
                               generate_s, time.perf_counter() - t))
    except EOFError:  # the coordinator stopped the generation
        return
    except StaleRun as exc:
        with contextlib.suppress(OSError):
            conn.send(("stale", str(exc)))
    except Exception as exc:  # reported to the coordinator, which ends the run
        with contextlib.suppress(OSError):
            conn.send(("store", f"{type(exc).__name__}: {exc}"))
    finally:
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()
