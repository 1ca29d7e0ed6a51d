"""``extract-strategy``, ``analyze-chart`` and ``llm-usage``: the LLM pipelines from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli.common import job_failure
from pipelines import RunFailed, job_status
from pipelines.llm import (
    AnalysisRun,
    analyze_asset,
    analyze_chart,
    extract_from_document,
    extract_from_video,
    extract_strategy,
    usage_for_job,
)


def _finish(run: AnalysisRun, args: argparse.Namespace) -> int:
    """Print the id of the job that stores the result; with ``--wait``, the result and its usage."""
    if not args.wait:
        print(run.job_id)
        return 0
    try:
        found = run.wait(args.timeout)
    except RunFailed as error:
        reason = f": {error.error_message}" if error.error_message else ""
        print(f"job {error.job_id} {error.state}{reason}", file=sys.stderr)
        return 1
    except TimeoutError:
        queued = "still queued (is a worker on the llm queue running?)"
        print(job_failure(run.job_id, job_status(run.job_id), queued=queued), file=sys.stderr)
        return 1
    print(json.dumps({**(found or {}), "usage": usage_for_job(run.job_id)}, indent=2, default=str))
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    if args.document:
        run = extract_from_document(args.source)
    elif args.video:
        run = extract_from_video(args.source)
    else:
        source = args.source
        if source == "-":
            source = sys.stdin.read()
        run = extract_strategy(source)
    return _finish(run, args)


def _cmd_analyze(args: argparse.Namespace) -> int:
    return _finish(analyze_asset(args.asset) if args.asset else analyze_chart(args.path), args)


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
