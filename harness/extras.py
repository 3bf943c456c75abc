"""Optional dependency groups, and the one error a command gives when its group is missing.

The core install (redis, rq, click, tqdm, hiredis, psutil) runs `harness run`, `worker`,
`status` and `export` on SQLite; a worker image needs nothing more. The rest comes in extras:
``[postgres]`` (psycopg 3 and its pool), ``[mongo]`` (pymongo), ``[notebooks]`` (pandas,
matplotlib, papermill, nbconvert, ipykernel, scipy) for tables, sweeps, reports and
comparisons, ``[api]`` (FastAPI, uvicorn, prometheus-client) for `harness serve`.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from harness.errors import MissingExtra

# module -> the extra that installs it
EXTRA_OF = {
    "pymongo": "mongo", "psycopg": "postgres", "psycopg_pool": "postgres",
    "pandas": "notebooks", "matplotlib": "notebooks", "papermill": "notebooks",
    "nbconvert": "notebooks", "nbformat": "notebooks", "scipy": "notebooks", "ipykernel": "notebooks",
    "fastapi": "api", "uvicorn": "api", "prometheus_client": "api",
}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise MissingExtra naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if exc.name is not None and exc.name.split(".")[0] != top:
            raise  # the module is there but broken: that is not a missing extra
        raise MissingExtra(EXTRA_OF.get(top, "notebooks"), top) from None


def require_installed(*modules: str) -> None:
    """Raise MissingExtra for the first of ``modules`` that is not installed, without
    importing any: what a command checks before it starts work that needs them later."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(EXTRA_OF.get(module, "notebooks"), module)
