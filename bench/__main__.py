"""python -m bench [--quick] [--output FILE] [--json FILE] [--soak SECONDS]

Runs the whole benchmark against the local RabbitMQ and PostgreSQL, prints the table and
writes it into BENCHMARKS.md (between its markers; the text around them is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import orjson

from bench.plan import QUICK, Plan
from bench.report import (
    SOAK_BEGIN,
    SOAK_END,
    SWEEP_BEGIN,
    SWEEP_END,
    render,
    write_section,
)
from bench.runner import SWEEP_MAX_S, SWEEP_SIZES, Bench


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and short loops (a smoke test, not a measurement)")
    parser.add_argument("--output", type=Path, default=None,
                        help="markdown file to write (default: BENCHMARKS.md, or nothing "
                             "with --quick)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results")
    parser.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                        help="instead: run the worker under steady load this long and report "
                             "its memory over time")
    parser.add_argument("--sweep", action="store_true",
                        help="instead: the worker's rate over prefetch x pool size")
    args = parser.parse_args(argv)
    output = args.output or (None if args.quick else Path("BENCHMARKS.md"))

    if args.soak is not None:
        samples = asyncio.run(Bench(Plan(), say).soak(args.soak))
        text = soak_report(args.soak, samples)
        say(text)
        if output is not None:
            write_section(output, text, SOAK_BEGIN, SOAK_END)
        return 0

    if args.sweep:
        rates = asyncio.run(Bench(Plan(max_s=SWEEP_MAX_S), say).sweep())
        text = sweep_report(rates)
        say(text)
        if output is not None:
            write_section(output, text, SWEEP_BEGIN, SWEEP_END)
        return 0

    plan = QUICK if args.quick else Plan()
    say(f"benchmark ({'quick' if args.quick else 'full'}): sizes {list(plan.sizes)}")
    results = asyncio.run(Bench(plan, say).run())
    text = render(results)
    say("")
    say(text)
    if output is not None:
        write_section(output, text)
        say(f"\nwritten to {output}")
    if args.json is not None:
        args.json.write_text(orjson.dumps(results.as_json(), option=orjson.OPT_INDENT_2).decode())
    return 0


def soak_report(duration_s: float, samples: list[tuple[float, float]]) -> str:
    rows = ["| elapsed s | worker RSS MB |", "|---|---|"]
    rows += [f"| {t:,.0f} | {mb:,.1f} |" for t, mb in samples]
    settled = [mb for t, mb in samples if t >= 60] or [mb for _, mb in samples]
    summary = (f"Soak: 1,000-item batches at the maximum rate for {duration_s:,.0f} s. "
               f"RSS after the first minute: min {min(settled):.1f} MB, "
               f"max {max(settled):.1f} MB, last {settled[-1]:.1f} MB.")
    return summary + "\n\n" + "\n".join(rows)


def sweep_report(rates: list[tuple[int, int, int, float]]) -> str:
    head = "| prefetch | pool | " + " | ".join(f"{s:,}-item items/s" for s in SWEEP_SIZES) + " |"
    rows = [head, "|---|---|" + "---|" * len(SWEEP_SIZES)]
    by_config: dict[tuple[int, int], dict[int, float]] = {}
    for prefetch, pool, size, rate in rates:
        by_config.setdefault((prefetch, pool), {})[size] = rate
    for (prefetch, pool), sizes in by_config.items():
        cells = " | ".join(f"{sizes.get(s, 0):,.0f}" for s in SWEEP_SIZES)
        rows.append(f"| {prefetch} | {pool} | {cells} |")
    return "Worker rate by prefetch and pool size (python -m bench --sweep):\n\n" + "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
