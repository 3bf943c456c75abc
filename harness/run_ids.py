"""Run ids a caller gives: checked against one pattern, and never one that is taken.

A run's id is made by the harness (:func:`harness.record.new_run_id`: its UTC start time and
six random hex digits) unless a caller names it: a launcher through ``HARNESS_RUN_ID`` (the
HTTP API, a sweep's points), a notebook through its ``run_id`` parameter, Python through
``run(..., run_id=...)``. A given id used to be taken as it was: ``run_id`` set to the id of
a DONE run replaced that run's record (60,000 orders became 200), and ``../../etc/x`` was
stored under an id no route could address. Now every run checks a given id here, at its
start and again once it holds the run lock, before it writes anything: an id that breaks
:data:`PATTERN` or that the run history already holds is refused (ConfigError, exit 2), so
no new run ever replaces a record (:meth:`harness.store.Store.close_run` keeps the same
promise for records written by anyone else).
"""

from __future__ import annotations

import re

from harness.errors import ConfigError
from harness.lock import MAINTENANCE_HOLDERS
from harness.store import Store

# Letters, digits, '.', '_' and '-', 1 to 64 of them, the first a letter or a digit: safe in
# a URL path (/pedidos/runs/{runId}), a file name (data/pending-records/<id>.json, a log) and
# a command line (it never reads as a flag).
PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RULE = ("a run id is 1-64 letters, digits, '.', '_' or '-', starting with a letter or a "
        "digit")


def check(run_id: object, source: str = "run id") -> str:
    """``run_id`` if it is a usable run id, else a ConfigError naming ``source``."""
    if not isinstance(run_id, str) or not PATTERN.fullmatch(run_id):
        raise ConfigError(f"{source} {run_id!r}: {RULE}", "run_id")
    if run_id.startswith(MAINTENANCE_HOLDERS):  # the lock would read it as reset's or bench's
        raise ConfigError(f"{source} {run_id!r}: ids starting with "
                          f"{' or '.join(map(repr, MAINTENANCE_HOLDERS))} are the harness's own",
                          "run_id")
    return run_id


class IdTaken(ConfigError):
    """The run history already holds the id a new run was given (exit 2, as bad input)."""


def refuse_taken(store: Store, run_id: str, source: str = "run id") -> None:
    """IdTaken if the run history already holds ``run_id``: a new run never takes the id
    (and so the record) of another."""
    record = store.get_run(run_id)
    if record is not None:
        raise IdTaken(
            f"{source} {run_id!r} is taken: the run history holds that run ({record.phase}); "
            "a new run needs an id of its own (leave it unset and the harness makes one)",
            "run_id")
