"""Every error the harness raises on purpose, in one tree (as httpx keeps its own).

Each branch says how a front end reports it: the CLI exits with ``exit_code`` and prints one
line, the HTTP API answers ``http_status`` with the message as JSON. A new error picks its
branch here and every front end handles it without a change of its own.

    HarnessError
    ├── BadInput            exit 2, HTTP 400   a value the harness cannot use
    │   ├── ConfigError                        a setting (flag, variable, parameter, query)
    │   ├── NotFound        HTTP 404           a run, sweep or file named that does not exist
    │   │   ├── LogFileMissing  exit 1             no log file yet (as `harness logs` always said)
    │   │   └── NoRuns          exit 1             nothing recorded at all (a report of nothing)
    │   └── MissingExtra                       an optional dependency is not installed
    ├── ServiceUnavailable  exit 1, HTTP 503   Redis or the store cannot be reached or used
    │   ├── RedisUnavailable
    │   └── StoreError
    ├── Conflict            exit 1, HTTP 409   the state of things forbids it now
    │   ├── RunActive                          another run holds the lock
    │   ├── NoActiveRun                        it needs a run in progress
    │   ├── StaleRun                           another run (or epoch) now owns the store
    │   ├── SweepActive                        another sweep is running
    │   └── CannotResume                       the store no longer holds that run as it was
    └── Failed              exit 1, HTTP 500   the work itself failed
        ├── RunFailed                          a run could not reach DONE
        ├── CancelTimeout
        ├── BenchFailed
        └── NotebookMissing
"""

from __future__ import annotations

from typing import ClassVar

from harness.datatypes import LockHolder


class HarnessError(Exception):
    """Root of the harness's own errors; the message is meant for a person, one line."""

    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for this error in a notebook (JupyterLab, papermill's executed
        notebook and its error report): the one line the CLI prints, not a traceback
        through the harness's internals. IPython calls this hook on any exception."""
        return [f"{type(self).__name__}: {self}"]


class BadInput(HarnessError, ValueError):
    """A value the harness cannot use; nothing was written."""

    exit_code = 2
    http_status = 400


class ConfigError(BadInput):
    """A setting has a value the harness cannot use; the message names it and the value.

    ``field`` is the setting, so that the caller can say where the value came from (an
    environment variable, a flag, a notebook parameter, a query parameter).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(BadInput):
    """A run, sweep or file that was named does not exist."""

    http_status = 404


class LogFileMissing(NotFound):
    """No log file exists where runs would write one. Not the caller's mistake but a setting
    of the runs, so the CLI keeps the exit code 1 that `harness logs` has always had."""

    exit_code = 1


class NoRuns(NotFound):
    """No run is recorded at all: nothing to report or export. Not a mistake in what was
    asked, so exit 1; a sweep id that has no runs is a plain NotFound (exit 2)."""

    exit_code = 1


class MissingExtra(BadInput):
    """A command needs an optional dependency group that is not installed."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(f"this needs the [{extra}] extra ({module} is not installed): "
                         f"pip install 'harness[{extra}]'")
        self.extra = extra


class ServiceUnavailable(HarnessError):
    """Redis or the store cannot be reached, or cannot be used now."""

    http_status = 503


class RedisUnavailable(ServiceUnavailable):
    """No Redis answers at the configured address (message redacted)."""


class StoreError(ServiceUnavailable):
    """The store cannot be reached or refused an operation; the message says which."""


class Conflict(HarnessError):
    """What was asked conflicts with the state of things now (a run is active, or is not)."""

    http_status = 409


class RunActive(Conflict):
    """Another run holds the lock; the message names it and ``holder`` is who holds it."""

    def __init__(self, message: str, holder: LockHolder | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class SweepActive(Conflict):
    """Another sweep is running; the message names it and ``holder`` is who runs it."""

    def __init__(self, message: str, holder: LockHolder | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class NoActiveRun(Conflict):
    """What was asked needs a run in progress; the message says what to do instead."""


class StaleRun(Conflict):
    """This process writes for a run (or an epoch of it) that no longer owns the store: a
    later run or a resume claimed it (see :meth:`harness.store.Store.claim`). Nothing was
    written."""


class CannotResume(Conflict):
    """The run asked for cannot be resumed; the message says why."""


class Failed(HarnessError):
    """The work itself failed; the message says what and, where one exists, the remedy."""


class RunFailed(Failed):
    """The run could not reach DONE; the record says why."""


class CancelTimeout(Failed):
    """The run did not stop within the cancel timeout."""


class BenchFailed(Failed):
    """A measurement could not complete; the message says which and why."""


class NotebookMissing(Failed):
    """The notebooks folder does not hold the notebook asked for."""
