"""``search``, ``ingest-document`` and ``document``: the documents pipeline from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from pipelines.documents import SearchResult, document_status, ingest_document, reprocess, search, wait_for_document


def _print_hits(results: list[SearchResult], as_json: bool) -> None:
    if as_json:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return
    for rank, result in enumerate(results, start=1):
        snippet = " ".join(result.text.split())[:160]
        print(f"{rank}. {result.score:.3f}  {result.path} page {result.page}  (document {result.document_id})")
        print(f"   {snippet}")


def _cmd_search(args: argparse.Namespace) -> int:
    results = search(args.query, k=args.k)
    if not results:
        print("no indexed documents match (is anything indexed yet?)", file=sys.stderr)
        return 1
    _print_hits(results, args.json)
    return 0


def _password(args: argparse.Namespace) -> str | None:
    """``--password VALUE``, or a prompt for ``--password`` alone (it then stays out of the shell's history
    and of the process list)."""
    if args.password is _PROMPT:
        import getpass

        return getpass.getpass("PDF password: ")
    return str(args.password) if args.password is not None else None


_PROMPT = object()


def _cmd_ingest(args: argparse.Namespace) -> int:
    run = ingest_document(args.path, password=_password(args))
    if not args.wait:
        print(run.document_id)
        return 0
    status = wait_for_document(run.document_id, args.timeout)
    print(json.dumps(status, indent=2, default=str))
    return 0 if status is not None and status["status"] == "indexed" else 1


def _cmd_document(args: argparse.Namespace) -> int:
    from storage.db import migrate

    migrate()
    if args.reprocess:
        reprocess(args.document_id, password=_password(args))
    status = document_status(args.document_id)
    if status is None:
        print(f"document {args.document_id} does not exist", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, default=str))
    return 0


PASSWORD_HELP = "the password of an encrypted PDF; without a value it is asked for"


def register_cli(subparsers: Any) -> None:
    """Add ``search``, ``ingest-document`` and ``document`` subcommands to the operator's cli."""
    p = subparsers.add_parser("search", help="search indexed documents by meaning")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=5, help="how many chunks to show (default 5)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(handler=_cmd_search)

    p = subparsers.add_parser("ingest-document", help="index a PDF, DOCX, text or Markdown file")
    p.add_argument("path", help="path under the storage root (STORAGE_ROOT)")
    p.add_argument("--wait", action="store_true", help="wait until it is indexed or failed")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait (default 1800)")
    p.add_argument("--password", nargs="?", const=_PROMPT, help=PASSWORD_HELP)
    p.set_defaults(handler=_cmd_ingest)

    p = subparsers.add_parser("document", help="show a document's status (or reprocess it)")
    p.add_argument("document_id", type=int)
    p.add_argument("--reprocess", action="store_true", help="read it again from scratch")
    p.add_argument("--password", nargs="?", const=_PROMPT, help=PASSWORD_HELP)
    p.set_defaults(handler=_cmd_document)
