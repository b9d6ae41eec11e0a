"""The typed building blocks of the benchmarks' figures, and the tables they print as.

A figure is a frozen dataclass (serialised to `results.json` with `dataclasses.asdict`) with a `tables()`
method; `Spread` and `Comparison` are what most figures are made of, and `spread_row` is the one row format for
them in every table.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

T = TypeVar("T")

# ================================================================================================ statistics


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (a value that was measured, no interpolation)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


RATIO = "ratio"  # the unit of ratios, shown with the multiplication sign
TIMES = "\u00d7"
DASH = "\u2013"  # between the ends of a range
DIGITS = {"ms": 2, "s": 3, "MiB": 2, RATIO: 3}


@dataclass(frozen=True)
class Spread:
    """Where the samples of one quantity lie: median, quartiles, p95 and range, in `unit`."""

    unit: str
    n: int
    median: float
    p25: float
    p75: float
    p95: float
    min: float
    max: float
    samples: list[float] | None = None

    @classmethod
    def of(cls, samples: Sequence[float], unit: str, *, keep_samples: bool = False) -> Spread:
        """Summarise samples (kept in the JSON when `keep_samples`)."""
        digits = DIGITS.get(unit, 3)

        def r(value: float) -> float:
            return round(value, digits)

        return cls(
            unit=unit,
            n=len(samples),
            median=r(statistics.median(samples)),
            p25=r(percentile(samples, 0.25)),
            p75=r(percentile(samples, 0.75)),
            p95=r(percentile(samples, 0.95)),
            min=r(min(samples)),
            max=r(max(samples)),
            samples=[r(value) for value in samples] if keep_samples else None,
        )


@dataclass(frozen=True)
class Comparison:
    """Ours against a baseline, measured in interleaved pairs: both spreads, the ratio and difference of the
    medians, and the spread of the per-pair ratios (how much the ratio itself moves)."""

    ours: Spread
    baseline: Spread
    ratio: float
    difference: float
    paired_ratios: Spread

    @classmethod
    def of(
        cls, ours: Sequence[float], baseline: Sequence[float], unit: str, *, keep_samples: bool = False
    ) -> Comparison:
        """Compare paired samples (the i-th of each were taken next to each other)."""
        a = Spread.of(ours, unit, keep_samples=keep_samples)
        b = Spread.of(baseline, unit, keep_samples=keep_samples)
        pairs = [x / y for x, y in zip(ours, baseline, strict=True)]
        return cls(
            ours=a,
            baseline=b,
            ratio=round(statistics.median(ours) / statistics.median(baseline), 3),
            difference=round(statistics.median(ours) - statistics.median(baseline), DIGITS.get(unit, 3)),
            paired_ratios=Spread.of(pairs, RATIO),
        )


# ================================================================================================ tables


def number(value: float, unit: str, *, signed: bool = False) -> str:
    """A value without its unit, as precise as the unit deserves."""
    sign = "+" if signed else ""
    if unit == "ms":
        return f"{value:{sign}.0f}" if abs(value) >= 100 else f"{value:{sign}.2f}"
    if unit == RATIO:
        return f"{value:{sign}.3f}"
    return f"{value:{sign}.1f}"


def with_unit(text: str, unit: str) -> str:
    """The value and its unit: `1.5 ms`, but `0.952x` with the multiplication sign."""
    return f"{text}{TIMES}" if unit == RATIO else f"{text} {unit}"


def fmt(value: float | None, unit: str, *, signed: bool = False) -> str:
    """A value for the tables (`-` when there is none)."""
    return "-" if value is None else with_unit(number(value, unit, signed=signed), unit)


def fmt_range(low: float, high: float, unit: str) -> str:
    """Both ends and the unit once: `1450-1627 ms` (with an en dash)."""
    return with_unit(f"{number(low, unit)}{DASH}{number(high, unit)}", unit)


SPREAD_HEADER = ["median", f"p25{DASH}p75", f"min{DASH}max", "p95", "n"]


def spread_row(label: str, spread: Spread) -> list[str]:
    """The one row format for a measured quantity (under `SPREAD_HEADER`)."""
    u = spread.unit
    return [
        label,
        fmt(spread.median, u),
        fmt_range(spread.p25, spread.p75, u),
        fmt_range(spread.min, spread.max, u),
        fmt(spread.p95, u),
        str(spread.n),
    ]


def comparison_rows(comparison: Comparison, ours: str, baseline: str) -> list[list[str]]:
    """Ours, the baseline, the per-pair ratios, then the ratio and difference of the medians."""
    c = comparison
    return [
        spread_row(ours, c.ours),
        spread_row(baseline, c.baseline),
        spread_row("  ratio per pair", c.paired_ratios),
        ["  ratio of medians", fmt(c.ratio, RATIO)] + [""] * (len(SPREAD_HEADER) - 1),
        ["  difference of medians", fmt(c.difference, c.ours.unit, signed=True)] + [""] * (len(SPREAD_HEADER) - 1),
    ]


@dataclass(frozen=True)
class Table:
    """A titled table with notes under it, rendered as plain text or as markdown."""

    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        """Plain text, columns padded."""
        widths = [max(len(row[i]) for row in [self.header, *self.rows]) for i in range(len(self.header))]
        rule = "  ".join("-" * width for width in widths)

        def line(cells: Sequence[str]) -> str:
            return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

        out = [self.title, rule, line(self.header), rule, *(line(row) for row in self.rows)]
        return "\n".join(out + [f"   {note}" for note in self.notes])

    def markdown(self) -> str:
        """A GitHub markdown table with a bold title."""

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        out = [f"**{self.title}**", "", line(self.header), line(["---"] * len(self.header))]
        out += [line(row) for row in self.rows]
        return "\n".join(out) + "".join(f"\n\n{note}" for note in self.notes)


class Figure(Protocol):
    """What a benchmark returns: a dataclass (serialised to the JSON as it is) that can render its tables."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    def tables(self) -> list[Table]:
        """The figure as tables, for stdout or markdown."""
        ...


@dataclass(frozen=True)
class Failed:
    """A benchmark (or part of one) that could not be measured; the others still run."""

    title: str
    error: str

    def tables(self) -> list[Table]:
        """One line saying so."""
        return [Table(self.title, ["result"], [[f"failed: {self.error}"]])]


# ================================================================================================ failures


def explain(exc: BaseException) -> str:
    """An exception in one line, with its notes; a task group's exceptions unwrapped."""
    notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", []))
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(explain(inner) for inner in exc.exceptions) + notes
    return f"{type(exc).__name__}: {exc}{notes}"


async def guarded(title: str, work: Awaitable[T]) -> T | Failed:
    """Run one measurement; a failure becomes a `Failed` figure instead of stopping the whole run."""
    try:
        return await work
    except Exception as exc:
        print(f"[{title}] failed: {explain(exc)}", file=sys.stderr, flush=True)
        return Failed(title, explain(exc))
