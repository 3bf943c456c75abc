"""Folders and files the harness writes, checked before the work that needs them starts.

A data folder that is a regular file, a log file that is a folder or lies under one that
cannot exist (``/proc/nope/x.log``), an output under a regular file: each used to end in a
raw ``FileExistsError`` or ``IsADirectoryError`` traceback, on every command, and
``harness bench -o`` only after running everything. Here each becomes one ConfigError
naming the path and where it came from (the variable or flag), before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.config import Settings
from harness.errors import ConfigError

DATA_DIR = "HARNESS_DATA_DIR / --data-dir"
LOG_FILE = "HARNESS_LOG_FILE"
REPORTS_DIR = "HARNESS_REPORTS_DIR / --reports-dir"


def usable_dir(path: Path, source: str) -> Path:
    """``path`` as a folder the harness can write in, created (with its parents) if missing;
    else a ConfigError: ``source``, then what is wrong with the folder."""
    problem = folder_problem(Path(path))
    if problem is not None:
        raise ConfigError(f"{source}: {problem}")
    return Path(path)


def folder_problem(path: Path) -> str | None:
    """Create ``path`` as a folder if missing; what stops it being a writable folder, if
    anything (a sentence naming the folder), else None."""
    blocker = _file_in_the_way(path)
    if blocker is not None:
        return (f"{str(path)!r} is a file, not a folder" if blocker == path
                else f"{str(path)!r} lies under {str(blocker)!r}, a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"folder {str(path)!r} cannot be created: {exc.strerror or exc}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"folder {str(path)!r} is not writable"
    return None


def check_output_file(path: Path, source: str) -> Path:
    """Check, creating and writing nothing, that a file can be written at ``path``: not a
    folder, and under a folder that exists (writable) or can be created."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{source} {str(path)!r}: is a folder; name a file")
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        raise ConfigError(f"{source} {str(path)!r}: {str(blocker)!r} is a file, not a folder")
    existing = next(p for p in (path.parent.absolute(), *path.parent.absolute().parents) if p.exists())
    target = path if path.exists() else existing
    if not os.access(target, os.W_OK):
        raise ConfigError(f"{source} {str(path)!r}: {str(target)!r} is not writable")
    return path


def data_dir(settings: Settings) -> Path:
    """The data folder, created if missing; a ConfigError naming it if it cannot be."""
    return usable_dir(settings.data_dir, DATA_DIR)


def _file_in_the_way(path: Path) -> Path | None:
    """The first of ``path`` and its parents that exists and is not a folder, if any."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None
