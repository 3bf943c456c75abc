"""How much the harness takes in from outside, at most: each bound says what it bounds, and
is checked before the work that would exceed it starts.

``harness compare /dev/zero x`` read for ever (23.5 GB, and the kernel killed the machine
with it), a results file nested 100,000 levels deep was a RecursionError traceback, and one
100 MB log line read back by ten clients of ``GET /pedidos/logs?lines=1`` took the server to
1.27 GB. The counts a command or route takes (runs, lines, repeats, limits) are bounded
where they are parsed (:mod:`harness.parsing`); what they read is bounded here:

* ``MAX_RESULTS_BYTES``: a results file (``harness export``'s, read by ``compare``,
  ``report --baseline`` and ``sweep --baseline``) is a regular file of at most 128 MiB,
  about 24,000 runs at 5.5 KB a run; ``harness export`` refuses to write a bigger one.
* ``MAX_JSON_DEPTH``: nested at most 64 levels (a run record is 6 deep).
* ``MAX_SWEEP_RUNS``: a sweep makes at most 10,000 runs (its grid's points times its
  repeats and warm-up rounds), counted before any point is built.
* ``MAX_LOG_LINE``: a log line read back (from Redis or a log file) is cut at 8 KiB, and
  lines written to Redis are cut there too; a log file's tail is read from its last
  ``MAX_TAIL_BYTES`` (16 MiB) only, whatever its size, and only from a regular file.
* ``MAX_RECORD_BYTES``: a run record put aside (``pending-records/``) is read back only up
  to 16 MiB.

A refusal is one line: BadInput (exit 2, HTTP 400).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from harness.errors import BadInput

MAX_RESULTS_BYTES = 128 * 1024 * 1024
MAX_RECORD_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 64
MAX_SWEEP_RUNS = 10_000
MAX_LOG_LINE = 8 * 1024
MAX_TAIL_BYTES = 16 * 1024 * 1024


def mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB" if size >= 2**20 else f"{size:,} bytes"


def read_bounded(path: Path, source: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, if it holds at most ``max_bytes``; else
    BadInput naming ``source``. A device, a FIFO or a folder is refused before it is opened
    for reading (``/dev/zero`` never ends; a FIFO would wait for a writer). FileNotFoundError
    and other OSErrors are the caller's."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise BadInput(f"{source} {path}: not a regular file")
    if info.st_size > max_bytes:
        raise BadInput(f"{source} {path}: {mib(info.st_size)}, above the {mib(max_bytes)} "
                       "such a file may hold")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)  # it may have grown since
    if len(data) > max_bytes:
        raise BadInput(f"{source} {path}: above the {mib(max_bytes)} such a file may hold")
    return data


def loads(data: bytes | str, source: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON, nested at most ``max_depth`` levels; BadInput naming ``source`` otherwise
    (json.JSONDecodeError for JSON that does not parse is the caller's)."""
    too_deep = BadInput(f"{source}: JSON nested deeper than {max_depth} levels")
    try:
        doc = json.loads(data)
    except RecursionError:  # deeper than Python's recursion limit: far too deep
        raise too_deep from None
    if depth(doc, max_depth) > max_depth:
        raise too_deep
    return doc


def depth(doc: Any, stop: int) -> int:
    """How deep ``doc`` nests (a scalar is 0), counted without recursion, and no further
    than ``stop`` + 1."""
    deepest, todo = 0, [(doc, 1)]
    while todo:
        value, level = todo.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > stop:
            return deepest
        todo.extend((child, level + 1) for child in children)
    return deepest


def cut_line(line: str, most: int = MAX_LOG_LINE) -> str:
    """``line``, or if longer than ``most`` characters, its start and a mark saying how long
    it was: ``most`` characters in all."""
    if len(line) <= most:
        return line
    return f"{line[:most - 48]} [line cut: {len(line)} characters]"
