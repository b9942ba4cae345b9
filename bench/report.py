"""The results table, the target verdicts, and their place in BENCHMARKS.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.cpu import CpuSplit

BEGIN = "<!-- BENCH:BEGIN (written by python -m bench; edits inside are overwritten) -->"
END = "<!-- BENCH:END -->"
SOAK_BEGIN = "<!-- SOAK:BEGIN (written by python -m bench --soak) -->"
SOAK_END = "<!-- SOAK:END -->"
SWEEP_BEGIN = "<!-- SWEEP:BEGIN (written by python -m bench --sweep) -->"
SWEEP_END = "<!-- SWEEP:END -->"
STAGES_BEGIN = "<!-- STAGES:BEGIN (written by python -m bench.stages) -->"
STAGES_END = "<!-- STAGES:END -->"


# A figure that only some rows have: latency and peak memory where a consumer process was
# measured, a ratio where a like row to compare with exists.  None shows as "-".
Figure = float | None


@dataclass
class Row:
    """One contender at one batch size."""

    name: str
    size: int
    items_per_s: float
    batches_per_s: float
    p50_ms: Figure = None
    p99_ms: Figure = None
    peak_mb: Figure = None
    vs_ceiling: Figure = None
    vs_naive: Figure = None
    vs_clean: Figure = None
    cpu: CpuSplit | None = None


@dataclass
class Target:
    what: str
    measured: float
    bound: float
    # True: measured must be >= bound; False: <= bound.
    at_least: bool

    @property
    def met(self) -> bool:
        return self.measured >= self.bound if self.at_least else self.measured <= self.bound


@dataclass
class Results:
    context: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def find(self, name: str, size: int) -> Row | None:
        for row in self.rows:
            if row.name == name and row.size == size:
                return row
        return None

    def as_json(self) -> dict[str, Any]:
        rows = [{**asdict(r), "cpu": {**asdict(r.cpu), "total": r.cpu.total} if r.cpu else None}
                for r in self.rows]
        return {"context": self.context, "rows": rows,
                "targets": [{**asdict(t), "met": t.met} for t in self.targets],
                "notes": self.notes}


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(results: Results) -> str:
    head = ("| contender | items/batch | items/s | batches/s | p50 ms | p99 ms | peak MB "
            "| / ceiling | / naive | / clean |")
    lines = [head, "|" + "---|" * 10]
    for r in results.rows:
        lines.append(
            f"| {r.name} | {r.size:,} | {_num(r.items_per_s)} | {_num(r.batches_per_s, 1)} "
            f"| {_num(r.p50_ms, 1)} | {_num(r.p99_ms, 1)} | {_num(r.peak_mb)} "
            f"| {_ratio(r.vs_ceiling)} | {_ratio(r.vs_naive)} | {_ratio(r.vs_clean)} |")
    return "\n".join(lines)


def cpu_table(results: Results) -> str:
    """CPU per item by process group, for the rows that measured it."""
    lines = ["| contender | items/batch | consumer | PostgreSQL | RabbitMQ | load/client "
             "| total | cores busy |", "|" + "---|" * 8]
    for r in results.rows:
        c = r.cpu
        if c is None:
            continue
        lines.append(f"| {r.name} | {r.size:,} | {c.consumer:,.1f} | {c.postgres:,.1f} "
                     f"| {c.rabbitmq:,.1f} | {c.load:,.1f} | {c.total:,.1f} "
                     f"| {c.cores_busy:.2f} |")
    return "\n".join(lines)


def verdicts(results: Results) -> str:
    lines = ["| target | measured | bound | met |", "|---|---|---|---|"]
    for t in results.targets:
        sign = ">=" if t.at_least else "<="
        lines.append(f"| {t.what} | {t.measured:,.2f} | {sign} {t.bound:g} "
                     f"| {'yes' if t.met else '**no**'} |")
    return "\n".join(lines)


def render(results: Results) -> str:
    context = ", ".join(f"{k}: {v}" for k, v in results.context.items())
    parts = [f"Run: {context}.", "", table(results), "",
             "CPU per item (microseconds, closed loops), by process:", "", cpu_table(results),
             "", "Targets:", "", verdicts(results)]
    if results.notes:
        parts += ["", *[f"- {n}" for n in results.notes]]
    return "\n".join(parts)


def write_section(path: Path, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Put ``text`` between the markers of ``path``, keeping everything around them; a file
    without the markers gets them appended."""
    block = f"{begin}\n{text}\n{end}"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    if begin in current and end in current:
        before, _, rest = current.partition(begin)
        _, _, after = rest.partition(end)
        path.write_text(before + block + after)
    else:
        path.write_text(current.rstrip("\n") + "\n\n" + block + "\n")
