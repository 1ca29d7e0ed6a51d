"""``trends`` and ``sources``: the trend platform from the command line, and the demo's report."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.common import short, table
from pipelines.collection import demo_run_id, sources, trends, wait_for_run


def sources_table() -> str:
    rows = [
        (
            s.name,
            s.kind,
            s.status,
            f"{s.success_rate:.0%}" if s.success_rate is not None else "",
            f"{s.last_latency_ms:.0f} ms" if s.last_latency_ms is not None else "",
            s.items_last_run if s.items_last_run is not None else "",
            s.items_total,
            s.next_check_at.strftime("%Y-%m-%d %H:%M") if s.next_check_at else "now",
            short(s.last_error, 60),
        )
        for s in sources()
    ]
    headers = ["source", "kind", "status", "success", "latency", "last run", "items", "next check", "last error"]
    return table(headers, rows)


def trends_table(limit: int = 20, state: str | None = None) -> str:
    found = trends(limit, state)
    if not found:
        return "no trends yet (collect, then process_pending_items and score_trends)"
    rows = [
        (
            t["phrase"],
            t["state"] + (f" (→{t['pending']})" if t["pending"] else ""),
            f"{t['score']:.2f}",
            f"{t['current']}/{t['previous']}/{t['total']}",
            ", ".join(t["sources"]),
            t["topic"] if t["topic"] != t["phrase"] else "",
        )
        for t in found
    ]
    return table(["phrase", "state", "score", "mentions now/before/24h", "sources", "topic"], rows)


def demo_report() -> None:
    """After ``make demo``'s summary: the run's aggregate, the sources' health and the trends."""
    run_id = demo_run_id()
    if run_id is None:
        return
    try:
        run = wait_for_run(run_id, timeout=120)
    except TimeoutError as error:
        print(f"\ntrends: {error}")
        return
    print(f"\ncollection run {run['id']} {run['outcome']}: {run['new_items']} new items {run['items_by_source']}")
    print()
    print(sources_table())
    print()
    print(trends_table())


def _cmd_trends(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(trends(args.limit, args.state), indent=2))
    else:
        print(trends_table(args.limit, args.state))
    return 0


def _cmd_sources(args: argparse.Namespace) -> int:
    from storage.collection import reset_source

    if args.action == "reset":
        if not args.name:
            print("usage: python -m cli sources reset NAME", file=sys.stderr)
            return 2
        if not reset_source(args.name):
            print(f"no source named {args.name!r}", file=sys.stderr)
            return 1
        print(f"source {args.name} reset: enabled, no errors, due now")
        return 0
    if args.action == "test":
        if not args.name:
            print("usage: python -m cli sources test NAME", file=sys.stderr)
            return 2
        from actors.collection import test_source as dry_run

        print(json.dumps(dry_run(args.name), indent=2, default=str))
        return 0
    if args.json:
        print(json.dumps([s.__dict__ for s in sources()], indent=2, default=str))
    else:
        print(sources_table())
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``trends`` and ``sources [reset NAME | test NAME]`` to the operator's cli."""
    p = subparsers.add_parser("trends", help="trending phrases: state, score, mentions by window, sources")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--state", choices=["emerging", "rising", "peaking", "declining"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_trends)

    p = subparsers.add_parser("sources", help="health of each collection source; reset or dry-run one")
    p.add_argument("action", nargs="?", choices=["list", "reset", "test"], default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_sources)
