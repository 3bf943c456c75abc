"""The progress bar of a run, one for every front end: `harness run` draws it on stderr,
``run.ipynb`` on its cell's output (JupyterLab and papermill's executed notebook).

It is a run's progress callback. The coordinator reports while the run moves and once more
after the run is recorded (phase DONE, ERROR or ABORTED, processed = the final count), so a
DONE run's bar ends at 100 %: tqdm may skip drawing that update (``mininterval``), and
:meth:`ProgressBar.close` draws the last state whatever it skipped. Before the coordinator
held back its last report, a DONE run's bar ended at 26 % (5,000 orders) or 97-99 %
(200,000).
"""

from __future__ import annotations

from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.supervision import Progress


class ProgressBar:
    """A tqdm bar of processed orders, opened on the first report, so that a run refused
    before it starts (another run active, Redis unreachable) prints its one error line and
    no empty bar. Without ``total`` (a resume), the first report gives it."""

    def __init__(self, total: int | None, file: IO[str], mininterval: float = 0.5) -> None:
        self.total, self.file, self.mininterval = total, file, mininterval
        self.bar: Any = None

    def __call__(self, p: Progress) -> None:
        if self.bar is None:
            from tqdm.std import tqdm  # text, not a widget: it shows in papermill's output too

            self.bar = tqdm(total=self.total or p.target, unit="order", unit_scale=True,
                            dynamic_ncols=True, mininterval=self.mininterval, file=self.file,
                            desc="processed")
        self.bar.set_postfix_str(f"{p.phase.value}, generated {p.generated:,}", refresh=False)
        self.bar.update(p.processed - self.bar.n)

    def close(self) -> None:
        """Draw the last state and end the line."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
