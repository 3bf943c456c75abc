"""The README's headline figure, as data: what a run of that size compares itself to.

A user who runs ``make bench`` compares what it prints with the README. That comparison is
only fair when both say where they were measured: the same code ran 1M orders end to end in
10.3 s on one 2-core VM and in 16-20 s on another (11.5-11.8 s on the first, days later;
6.1-6.3 s once the store did less per order).
So the figure lives here once, with its machine; the README's "Measured figures" table
quotes it (``tests/test_reference.py`` checks that the two agree), and a run of the same
size prints it beside its own time (:func:`line_for`).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.record import RunRecord


@dataclass(frozen=True)
class Reference:
    """``quantity`` orders ran end to end in ``low_s``..``high_s`` (several runs), default
    settings, on ``machine``, on ``date``, as ``command`` measured them."""

    quantity: int
    low_s: float
    high_s: float
    machine: str
    date: str
    command: str
    where: str = "README.md, Measured figures, first row"

    @property
    def span(self) -> str:
        return f"{self.low_s:.1f}\N{EN DASH}{self.high_s:.1f} s"


HEADLINE = Reference(
    quantity=1_000_000, low_s=6.1, high_s=6.3,
    machine="AMD EPYC (virtualized), 2 vCPU, 1 thread per core, Debian 12, Python 3.11.7",
    date="2026-12-06", command="harness run -n 1000000 (5 runs, after harness bench)",
)


def line_for(record: RunRecord, reference: Reference = HEADLINE) -> str | None:
    """One line comparing a DONE run of the reference's size with it, or None."""
    if not record.is_done or record.counts.generated != reference.quantity or not record.total_time_ms:
        return None
    mine = record.total_time_ms / 1000
    return (f"{mine:.1f} s here; {reference.where}: {reference.span} on {reference.machine} "
            f"({reference.date}). Figures differ by machine and by day: compare ratios from "
            "one `harness bench` run")
