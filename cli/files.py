"""The file drive from the command line: ``upload``, ``file``, ``files``, ``search-files``, ``webhooks``
and ``deliveries``.

    python -m cli upload report.pdf --owner alice --wait
    python -m cli files --status failed
    python -m cli webhooks add https://example.com/hooks --events file.completed,file.failed
    python -m cli deliveries --status failed
    python -m cli deliveries replay 12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from cli.common import CliError, short, table, when
from pipelines import files, notifications

FINISHED = ("completed", "failed")


def _print_status(status: dict[str, Any]) -> None:
    print(json.dumps(status, indent=2, default=str))


def wait_for_file(file_id: int, timeout: float, poll: float = 0.25) -> dict[str, Any]:
    """The file's status once it is completed or failed; ``CliError`` when ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        status = files.file_status(file_id)
        if status is not None and status["status"] in FINISHED:
            return status
        if time.monotonic() >= deadline:
            state = "missing" if status is None else f"{status['status']} at step {status['step'] or '-'}"
            raise CliError(f"file {file_id} is still {state} after {timeout:g} s")
        time.sleep(poll)


def _cmd_upload(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.is_file():
        raise CliError(f"{args.path} is not a file")
    run = files.upload_file(path, args.name or path.name, owner=args.owner, dedupe=args.dedupe)
    if not args.wait:
        print(run.file_id)
        return 0
    status = wait_for_file(run.file_id, args.timeout)
    _print_status(status)
    return 0 if status["status"] == "completed" else 1


def _cmd_file(args: argparse.Namespace) -> int:
    if args.reprocess:
        files.reprocess(args.file_id)
    status = files.file_status(args.file_id)
    if status is None:
        raise CliError(f"file {args.file_id} does not exist")
    _print_status(status)
    return 0


def _cmd_files(args: argparse.Namespace) -> int:
    rows = files.list_files(owner=args.owner, status=args.status, kind=args.kind, limit=args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no files")
        return 0
    print(
        table(
            ["ID", "NAME", "OWNER", "KIND", "STATUS", "STEP", "UPLOADED", "ERROR"],
            [
                [
                    row["id"],
                    short(row["filename"], 40),
                    row["owner"],
                    row["kind"] or "",
                    row["status"],
                    row["failed_step"] or row["step"] or "",
                    when(row["created_at"]),
                    short(row["error"], 60),
                ]
                for row in rows
            ],
        )
    )
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    hits = files.search_files(args.query, k=args.k)
    if not hits:
        raise CliError("no file's text matches (are any files completed yet?)")
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank}. {hit['score']:.3f}  {hit['filename']}  (file {hit['id']}, {hit['owner'] or 'no owner'})")
        print(f"   {short(hit['text'], 160)}")
    return 0


def _cmd_webhooks(args: argparse.Namespace) -> int:
    action = args.action
    if action == "add":
        if not args.target:
            raise CliError("webhooks add needs the endpoint's URL")
        events = [name.strip() for name in (args.events or "").split(",") if name.strip()]
        endpoint = notifications.add_webhook(args.target, events, secret=args.secret)
        # The only time the secret is shown: the receiver needs it to verify signatures.
        print(json.dumps(endpoint, indent=2, default=str))
        return 0
    if action in ("remove", "enable"):
        if not args.target or not args.target.isdigit():
            raise CliError(f"webhooks {action} needs the endpoint's id")
        (notifications.remove_webhook if action == "remove" else notifications.enable_webhook)(int(args.target))
        print(f"webhook {args.target} {'removed' if action == 'remove' else 'enabled'}")
        return 0
    endpoints = notifications.list_webhooks()
    if not endpoints:
        print("no webhooks")
        return 0
    print(
        table(
            ["ID", "URL", "EVENTS", "ENABLED", "DISABLED BECAUSE"],
            [
                [e["id"], short(e["url"], 60), ",".join(e["events"]), e["enabled"], short(e.get("disabled_reason"), 50)]
                for e in endpoints
            ],
        )
    )
    return 0


def _cmd_deliveries(args: argparse.Namespace) -> int:
    if args.action == "replay":
        if args.delivery_id is None:
            raise CliError("deliveries replay needs a delivery id")
        print(f"delivery {args.delivery_id} replayed as delivery {notifications.replay_delivery(args.delivery_id)}")
        return 0
    if args.action == "show":
        if args.delivery_id is None:
            raise CliError("deliveries show needs a delivery id")
        print(json.dumps(notifications.get_delivery(args.delivery_id), indent=2, default=str))
        return 0
    rows = notifications.list_deliveries(status=args.status, limit=args.limit)
    if not rows:
        print("no deliveries")
        return 0
    print(
        table(
            ["ID", "EVENT", "TO", "STATUS", "ATTEMPTS", "LAST", "CREATED", "ERROR"],
            [
                [
                    row["id"],
                    row["event_type"],
                    row["target"],
                    row["status"],
                    row["attempts"],
                    row["last_status_code"] or "",
                    when(row["created_at"]),
                    short(row["last_error"], 50),
                ]
                for row in rows
            ],
        )
    )
    return 0


def register_cli(subparsers: Any) -> None:
    """Add the file drive's commands to the operator's cli."""
    p = subparsers.add_parser("upload", help="upload a file to the file drive and analyse it")
    p.add_argument("path")
    p.add_argument("--name", help="the file name to record (default: the path's)")
    p.add_argument("--owner", default="", help="who the file belongs to")
    p.add_argument("--dedupe", action="store_true", help="return the owner's file with this content, if any")
    p.add_argument("--wait", action="store_true", help="wait until it is completed or failed")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait (default 1800)")
    p.set_defaults(handler=_cmd_upload)

    p = subparsers.add_parser("file", help="show a file's status (or reprocess it)")
    p.add_argument("file_id", type=int)
    p.add_argument("--reprocess", action="store_true", help="analyse it again from scratch")
    p.set_defaults(handler=_cmd_file)

    p = subparsers.add_parser("files", help="list files, newest first")
    p.add_argument("--owner")
    p.add_argument("--status", choices=["pending", "processing", "completed", "failed"])
    p.add_argument("--kind", choices=["pdf", "docx", "text", "image", "video", "other"])
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print the files as JSON")
    p.set_defaults(handler=_cmd_files)

    p = subparsers.add_parser("search-files", help="find files by what their text means")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="how many files to show (default 5)")
    p.set_defaults(handler=_cmd_search)

    p = subparsers.add_parser("webhooks", help="list, add, remove or re-enable webhook endpoints")
    p.add_argument("action", nargs="?", choices=["list", "add", "remove", "enable"], default="list")
    p.add_argument("target", nargs="?", help="the URL (add) or the endpoint id (remove, enable)")
    p.add_argument("--events", help=f"comma-separated, of: {', '.join(notifications.EVENTS)}")
    p.add_argument("--secret", help="a whsec_… secret (default: a new one, printed once)")
    p.set_defaults(handler=_cmd_webhooks)

    p = subparsers.add_parser("deliveries", help="list notification deliveries, show or replay one")
    p.add_argument("action", nargs="?", choices=["list", "show", "replay"], default="list")
    p.add_argument("delivery_id", nargs="?", type=int)
    p.add_argument("--status", help="only deliveries in this status")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(handler=_cmd_deliveries)
