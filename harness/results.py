"""Results that travel: runs picked from the store (sweeps, the latest runs) or read from an
exported file, checked before anything runs, and written as one versioned JSON document.

An export holds whole run records (parameters, figures, memory, timeline, latency, each
run's environment) plus the newest run's environment at the top, so a file compared on
another machine says what it was measured on, as asv's results do::

    {"format": "harness-results", "version": 1, "exportedAt": "...",
     "environment": {...}, "sweeps": ["..."], "runs": [{...}, ...]}

Wherever a baseline is named (`harness compare`, `harness report --baseline`, `harness
sweep --baseline`), it may be a sweep id or such a file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import bounds
from harness.codec import from_json, to_json
from harness.config import Settings
from harness.errors import BadInput, ConfigError, NoRuns, NotFound
from harness.parsing import LATEST, write_output
from harness.record import Environment, RunRecord
from harness.store import Store, open_store

FORMAT = "harness-results"
VERSION = 1


@dataclass
class Results:
    """Runs to report or compare, and what they are: sweep ids or a file."""

    label: str
    runs: list[RunRecord]
    source: str = "store"  # or the file's path
    environment: Environment | None = None

    def __post_init__(self) -> None:
        if self.environment is None:
            self.environment = newest_environment(self.runs)


def newest_environment(runs: Sequence[RunRecord]) -> Environment | None:
    dated = sorted((r for r in runs if r.environment), key=lambda r: r.started_at or "")
    return dated[-1].environment if dated else None


def is_file(spec: str) -> bool:
    """A spec names a file when one exists there, or when it looks like one (``.json``, a
    folder in it); anything else is a sweep id."""
    return Path(spec).is_file() or spec.endswith(".json") or "/" in spec


def of_sweeps(store: Store, sweep_ids: Sequence[str], flag: str = "--sweep") -> list[RunRecord]:
    """The runs of these sweeps, oldest first; NotFound naming the first id without runs,
    and the nearest ids that have some (:func:`harness.sweeps.nearest`)."""
    from harness.sweeps import nearest

    runs = store.list_runs()
    wanted = set(sweep_ids)
    chosen = [r for r in runs if r.param("sweep_id") in wanted]
    found = {r.param("sweep_id") for r in chosen}
    for sweep_id in sweep_ids:
        if sweep_id not in found:
            raise NotFound(f"{flag} {sweep_id}: no runs are recorded for sweep {sweep_id!r}; "
                           f"{nearest(sweep_id, runs)}")
    return chosen[::-1]


def latest(store: Store, count: int) -> list[RunRecord]:
    """The newest ``count`` runs, oldest first; NoRuns when there are none at all."""
    runs = store.list_runs(limit=count)
    if not runs:
        raise NoRuns("no runs are recorded yet: `harness run` or `harness sweep` first")
    return runs[::-1]


def read_file(path: Path | str, flag: str = "--baseline") -> Results:
    """An exported file; NotFound if it is missing, BadInput if it is not an export or is
    beyond the bounds of one (a regular file of at most MAX_RESULTS_BYTES, JSON nested at
    most MAX_JSON_DEPTH levels: :mod:`harness.bounds`), checked before it is parsed."""
    path = Path(path)
    try:
        doc = bounds.loads(bounds.read_bounded(path, flag, bounds.MAX_RESULTS_BYTES),
                           f"{flag} {path}")
    except FileNotFoundError:
        raise NotFound(f"{flag} {path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{flag} {path}: not a harness results file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BadInput(f"{flag} {path}: not a harness results file (no \"format\": \"{FORMAT}\"); "
                       "write one with `harness export`")
    if doc.get("version") != VERSION:
        raise BadInput(f"{flag} {path}: results format version {doc.get('version')!r}; this "
                       f"harness reads version {VERSION}")
    try:
        runs = [RunRecord.from_json(r) for r in doc.get("runs") or []]
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise BadInput(f"{flag} {path}: not a harness results file (a run that is not a run "
                       f"record: {type(exc).__name__}: {str(exc)[:200]})") from None
    if not runs:
        raise NotFound(f"{flag} {path}: the file holds no runs")
    env = doc.get("environment")
    label = ", ".join(doc.get("sweeps") or []) or path.name
    return Results(f"{label} ({path.name})" if label != path.name else label, runs,
                   source=str(path), environment=from_json(Environment, env) if env else None)


def resolve(settings: Settings, spec: str, flag: str = "--baseline") -> Results:
    """A sweep id from the store, or an exported file."""
    if is_file(spec):
        return read_file(spec, flag)
    try:  # a sweep id names a folder: checked like one
        settings.replace(sweep_id=spec)
    except ConfigError as exc:
        raise ConfigError(f"{flag} {spec}: {exc}", "sweep_id") from None
    store = open_store(settings)
    try:
        return Results(spec, of_sweeps(store, [spec], flag))
    finally:
        store.close()


def select(settings: Settings, sweep_ids: Sequence[str] = (), count: int = 20) -> Results:
    """The runs of ``sweep_ids``, or the latest ``count`` runs; checked: NotFound naming a
    sweep without runs, NoRuns when nothing is recorded. ``count`` is checked as ``--latest``
    is (report.ipynb passes its parameter here: None or 10**20 is refused)."""
    LATEST.check(count)
    for sweep_id in sweep_ids:
        try:
            settings.replace(sweep_id=sweep_id)
        except ConfigError as exc:
            raise ConfigError(f"--sweep {sweep_id}: {exc}", "sweep_id") from None
    store = open_store(settings)
    try:
        if sweep_ids:
            return Results(", ".join(sweep_ids), of_sweeps(store, sweep_ids))
        runs = latest(store, count)
        return Results(f"the latest {len(runs)} runs", runs)
    finally:
        store.close()


def export(results: Results, sweep_ids: Sequence[str] = ()) -> dict[str, Any]:
    """The versioned JSON document of ``results``."""
    return {
        "format": FORMAT, "version": VERSION,
        "exportedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "sweeps": list(sweep_ids),
        "environment": to_json(results.environment) if results.environment else None,
        "runs": [r.to_json() for r in results.runs],
    }


def write(doc: dict[str, Any], path: Path | str, source: str = "output") -> Path:
    """Write ``doc`` to ``path``; a file that cannot be written is one line naming
    ``source`` (ConfigError), as a path checked before the work is. A file larger than a
    results file may be (bounds.MAX_RESULTS_BYTES) is refused, not written: nothing could
    read it back."""
    text = json.dumps(doc, indent=1) + "\n"
    if (size := len(text.encode())) > bounds.MAX_RESULTS_BYTES:
        raise BadInput(f"{source} {path}: the export would be {bounds.mib(size)}, above the "
                       f"{bounds.mib(bounds.MAX_RESULTS_BYTES)} a results file may hold; export "
                       "fewer runs (--latest, --sweep)")
    return write_output(Path(path), text, source)
