"""Rows of measurements, their medians, the tables and the floors."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Row:
    """One configuration measured `runs` times: metric -> one value per run.

    `status` replaces the figures when the row could not be measured ("not installed").
    `ref` names the row its ratio column compares against.
    """

    name: str
    ref: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    status: str = ""
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, value: float | None) -> None:
        if value is not None:
            self.samples.setdefault(metric, []).append(value)

    def median(self, metric: str) -> float | None:
        values = self.samples.get(metric)
        return statistics.median(values) if values else None

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


@dataclass(frozen=True)
class Column:
    """A column of medians of `metric`, or (ratio=True) the median over the ref row's."""

    metric: str
    header: str
    digits: int = 0
    ratio: bool = False


@dataclass
class Section:
    key: str
    title: str
    columns: list[Column]
    #: The metric whose every run is listed in the "runs" column.
    runsMetric: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, name: str, ref: str | None = None) -> Row:
        for existing in self.rows:
            if existing.name == name:
                return existing
        created = Row(name, ref)
        self.rows.append(created)
        return created

    def find(self, name: str) -> Row | None:
        return next((row for row in self.rows if row.name == name), None)

    def ratio(self, row: Row, metric: str) -> float | None:
        if row.ref is None:
            return None
        reference = self.find(row.ref)
        if reference is None:
            return None
        mine, theirs = row.median(metric), reference.median(metric)
        if mine is None or not theirs:
            return None
        return mine / theirs


def number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def renderSection(section: Section) -> str:
    headers = ["configuration", *(c.header for c in section.columns), "runs", "notes"]
    lines = [
        f"### {section.title}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers) - 1)) + "|---|",
    ]
    for row in section.rows:
        if row.status:
            cells = [row.name, row.status, *("" for _ in section.columns[1:]), "", ""]
        else:
            cells = [row.name]
            for column in section.columns:
                if column.ratio:
                    value = section.ratio(row, column.metric)
                    cells.append("—" if value is None else f"{value:.2f}× {row.ref}")
                else:
                    cells.append(number(row.median(column.metric), column.digits))
            digits = next((c.digits for c in section.columns if c.metric == section.runsMetric), 0)
            cells.append(
                ", ".join(number(v, digits) for v in row.samples.get(section.runsMetric, []))
            )
            cells.append("; ".join(row.notes))
        lines.append("| " + " | ".join(cells) + " |")
    if section.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in section.notes)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Floor:
    """A requirement checked on medians of one run: measured() -> (met, what was seen);
    met is None when a row it needs was not measured."""

    name: str
    required: str
    measured: Callable[[], tuple[bool | None, str]]


def renderFloors(floors: list[Floor]) -> str:
    lines = [
        "### Floors (medians of this run)",
        "",
        "| floor | required | measured | met |",
        "|---|---|---|---|",
    ]
    for floor in floors:
        met, seen = floor.measured()
        verdict = "not measured" if met is None else ("yes" if met else "**NO**")
        lines.append(f"| {floor.name} | {floor.required} | {seen} | {verdict} |")
    return "\n".join(lines) + "\n"
