"""Benchmark harness for a VIP-first order-processing pipeline (RQ + Redis + a store).

The public API, for scripts and notebooks::

    from harness import Settings, run, open_store, runs_frame
    record = run(Settings.from_env(quantity=100_000, seed=1))
"""

from harness.config import ConfigError, Settings
from harness.pipeline import run
from harness.runs import runs_frame
from harness.state import Phase
from harness.status import get_status
from harness.store import open_store

__all__ = ["ConfigError", "Phase", "Settings", "get_status", "open_store", "run", "runs_frame"]
__version__ = "0.1.0"
