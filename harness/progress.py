"""The progress bar of a run, one for every front end: `harness run` draws it on stderr,
``run.ipynb`` on its cell's output (JupyterLab and papermill's executed notebook).

It is a run's progress callback. The coordinator reports while the run moves and once more
after the run is recorded (phase DONE, ERROR or ABORTED, processed = the final count), so a
DONE run's bar ends at 100 %: tqdm may skip drawing that update (``mininterval``), and
:meth:`ProgressBar.close` draws the last state whatever it skipped. Before the coordinator
held back its last report, a DONE run's bar ended at 26 % (5,000 orders) or 97-99 %
(200,000).

Two forms. On a terminal (and in a notebook, where the front end redraws ``\r`` lines) it
is tqdm's bar. Anywhere else (``make bench | tee``, CI logs, a file) a bar is one
``\r``-joined line with log warnings spliced into it; there it is a plain line every
:data:`LINE_EVERY_S` seconds and one at the end, so logs keep their own lines. Both show
the run's own rate, processed orders over the pipeline's clock: the last one is the rate the
summary prints (tqdm's own rate, timed from the bar's first draw, said 27.8k/s where the
summary said 36,071/s).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from harness import numbers

if TYPE_CHECKING:
    from harness.supervision import Progress

LINE_EVERY_S = 5.0
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"


def _is_terminal(file: IO[str]) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """A run's progress, opened on the first report, so that a run refused before it starts
    (another run active, Redis unreachable) prints its one error line and no empty bar.
    Without ``total`` (a resume), the first report gives it. ``lines``: plain lines instead
    of a bar; by default when ``file`` is not a terminal."""

    def __init__(self, total: int | None, file: IO[str], mininterval: float = 0.5,
                 lines: bool | None = None) -> None:
        self.total, self.file, self.mininterval = total, file, mininterval
        self.lines = not _is_terminal(file) if lines is None else lines
        self.bar: Any = None
        self._last_line = -LINE_EVERY_S
        self._pending: Progress | None = None  # the latest report not yet written as a line

    def __call__(self, p: Progress) -> None:
        if self.lines:
            self._pending = p
            if time.monotonic() - self._last_line >= LINE_EVERY_S:
                self._write_line()
            return
        if self.bar is None:
            from tqdm.std import tqdm  # text, not a widget: it shows in papermill's output too

            self.bar = tqdm(total=self.total or p.target, unit="order", unit_scale=True,
                            dynamic_ncols=True, mininterval=self.mininterval, file=self.file,
                            desc="processed", bar_format=BAR_FORMAT)
        self.bar.set_postfix_str(f"{p.phase.value}, generated {p.generated:,}, "
                                 f"{numbers.rate(p.rate)}", refresh=False)
        self.bar.update(p.processed - self.bar.n)

    def _write_line(self) -> None:
        p, self._pending = self._pending, None
        if p is None:
            return
        self._last_line = time.monotonic()
        total = self.total or p.target
        share = f" ({p.processed / total:.0%})" if total else ""
        elapsed = "" if p.elapsed_s is None else f", {numbers.duration(p.elapsed_s * 1000)}"
        print(f"progress: {p.processed:,} of {total:,} processed{share}, generated "
              f"{p.generated:,}, {p.phase.value}, {numbers.rate(p.rate)}{elapsed}",
              file=self.file, flush=True)

    def close(self) -> None:
        """Draw the last state and end the line."""
        if self.lines:
            self._write_line()  # the last report, whenever the one before was written
        elif self.bar is not None:
            self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
