"""What the notebooks call around the harness, so that a notebook says what the CLI says:
a bad parameter is one line naming the notebook parameter and its value, and a sweep shows
its points and their throughput as they end.

A harness error raised in a cell shows as that one line (see
``HarnessError._render_traceback_``), in JupyterLab, in papermill's executed notebook and
at the end of papermill's own report; papermill then exits 1, as it does for any cell that
fails (it has no other code for a failing cell: 138 is a dead kernel).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from harness.config import RULES, SWEEPABLE, Settings
from harness.errors import ConfigError
from harness.extras import require
from harness.parsing import REPEATS

if TYPE_CHECKING:
    import pandas as pd

    from harness.report import SweepManifest


def parameter_error(exc: ConfigError, parameters: Mapping[str, Any]) -> ConfigError:
    """``exc`` naming the notebook parameter that gave the bad value: the parameter of the
    setting itself (``quantity``), or the grid entry holding it (``grid['chunk_size']``).
    An error about a value that came from elsewhere (an environment variable, a parameter
    left None) is returned as it is: its message already names its source."""
    field = exc.field
    if field is None:
        return exc
    if parameters.get(field) is not None:
        return ConfigError(f"notebook parameter {field}={parameters[field]!r}: {exc}", field)
    for name, value in parameters.items():
        if isinstance(value, Mapping) and field in value:
            return ConfigError(f"notebook parameter {name}[{field!r}]={value[field]!r}: {exc}", field)
    return exc


@contextmanager
def parameters(**given: Any) -> Iterator[None]:
    """Inside, a ConfigError about one of ``given`` names that notebook parameter."""
    try:
        yield
    except ConfigError as exc:
        named = parameter_error(exc, given)
        if named is exc:
            raise
        raise named from None


# Parameters of run.ipynb that take no None: `papermill -y 'quantity: null'` ran the default
# 1,000,000 orders instead of the notebook's 5,000.
REQUIRED = ("quantity",)


def settings(**given: Any) -> Settings:
    """Settings from the environment, then the notebook's parameters (None: the
    environment's value, or the default; but a parameter of :data:`REQUIRED` must be given);
    a bad parameter raises ConfigError naming it. A parameter is a Python value of its
    setting's type, checked as every door checks it (``5.0`` is not an integer, NaN is not
    a number)."""
    for name in REQUIRED:
        if name in given and given[name] is None:
            try:
                RULES[name].check(None)
            except ConfigError as exc:
                raise ConfigError(f"notebook parameter {name}=None: {exc} ({name} takes no None; "
                                  "the optional parameters do, and then take the environment's "
                                  "value)", name) from None
    with parameters(**given):
        return Settings.from_env(**given)


def sweep_size(settings: Settings, grid: Mapping[str, Sequence[Any]], repeats: int,
               sweep_id: str | None) -> int:
    """How many runs the sweep makes; every point checked first (a bad one raises
    ConfigError naming the notebook parameter), as `harness sweep` checks before its first run."""
    from harness.report import grid_points

    for name, value, check in (("repeats", repeats, REPEATS.check), ("grid", grid, _check_grid)):
        try:  # None included: neither takes one
            check(value)
        except ConfigError as exc:
            raise ConfigError(f"notebook parameter {name}={value!r}: {exc}", name) from None
    with parameters(grid=grid, repeats=repeats, sweep_id=sweep_id):
        if sweep_id:
            settings.replace(sweep_id=sweep_id)
        return len(grid_points(settings, grid, repeats, sweep_id or "check"))


def _check_grid(grid: Any) -> None:
    if not isinstance(grid, Mapping) or not all(isinstance(v, list | tuple) for v in grid.values()):
        raise ConfigError(f"grid must map run settings ({', '.join(SWEEPABLE)}) to lists of values",
                          "grid")


def sweep_table(settings: Settings, manifest: SweepManifest) -> pd.DataFrame:
    """One row per point, in the order they ran: its grid values, repeat, status, wall
    time, and the run's own figures from its record (orders/s from generation to DONE,
    the barrier gap), so that the sweep's cell shows throughput without the report."""
    pd = require("pandas")
    from harness.store import open_store

    store = open_store(settings)
    try:
        records = {p.run_id: store.get_run(p.run_id) for p in manifest.points}
    finally:
        store.close()
    rows = []
    for k, point in enumerate(manifest.points, 1):
        record = records[point.run_id]
        throughput = record.throughput if record is not None else None
        barrier = record.barrier if record is not None else None
        rows.append({
            "point": k, **point.values, "repeat": point.repeat, "seed": point.seed,
            "status": point.status, "wall s": point.wall_s,
            "orders/s": round(throughput.overall) if throughput and throughput.overall else None,
            "total s": round(record.total_time_ms / 1000, 2)
            if record is not None and record.total_time_ms is not None else None,
            "barrier gap ms": barrier.gap_ms if barrier is not None else None,
            "run id": point.run_id, "error": point.error or "",
        })
    return pd.DataFrame(rows)
