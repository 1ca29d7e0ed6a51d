"""``extract-strategy``, ``analyze-chart`` and ``llm-usage``: the LLM pipelines from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.common import job_failure, wait_for_job
from pipelines.llm import (
    analyze_asset,
    analyze_chart,
    chart_analysis_for_job,
    extract_from_document,
    extract_from_video,
    extract_strategy,
    strategy_for_job,
    usage_for_job,
)


def _finish(message_id: str, args: argparse.Namespace, result: Any) -> int:
    if not args.wait:
        print(message_id)
        return 0
    job = wait_for_job(message_id, args.timeout)
    if job is None or job.state != "succeeded":
        queued = "still queued (is a worker on the llm queue running?)"
        print(job_failure(message_id, job, queued=queued), file=sys.stderr)
        return 1
    print(json.dumps({**(result(message_id) or {}), "usage": usage_for_job(message_id)}, indent=2, default=str))
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    if args.document:
        message_id = extract_from_document(args.source)
    elif args.video:
        message_id = extract_from_video(args.source)
    else:
        source = args.source
        if source == "-":
            source = sys.stdin.read()
        message_id = extract_strategy(source)
    return _finish(message_id, args, strategy_for_job)


def _cmd_analyze(args: argparse.Namespace) -> int:
    message_id = analyze_asset(args.asset) if args.asset else analyze_chart(args.path)
    return _finish(message_id, args, chart_analysis_for_job)


def _cmd_usage(args: argparse.Namespace) -> int:
    print(json.dumps(usage_for_job(args.job_id), indent=2))
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``extract-strategy``, ``analyze-chart`` and ``llm-usage`` to the operator's cli."""
    p = subparsers.add_parser("extract-strategy", help="extract a trading strategy from text, a document or a video")
    p.add_argument(
        "source", help="text ('-' reads stdin), document:ID, video:ID, or a path/URL with --document/--video"
    )
    p.add_argument("--document", action="store_true", help="source is a file to index first (under STORAGE_ROOT)")
    p.add_argument("--video", action="store_true", help="source is a video URL or file to transcribe first")
    p.add_argument("--wait", action="store_true", help="wait and print the stored strategy and its usage")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    p.set_defaults(handler=_cmd_extract)

    p = subparsers.add_parser("analyze-chart", help="analyse a chart image, or an asset's rendered chart")
    p.add_argument("path", nargs="?", help="image path under STORAGE_ROOT")
    p.add_argument("--asset", help="symbol or id: render its chart, then analyse it")
    p.add_argument("--wait", action="store_true", help="wait and print the stored analysis and its usage")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    p.set_defaults(handler=_cmd_analyze)

    p = subparsers.add_parser("llm-usage", help="calls, tokens and estimated cost of a job")
    p.add_argument("job_id")
    p.set_defaults(handler=_cmd_usage)
