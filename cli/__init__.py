"""The operator's tool: submit jobs, follow them, inspect queues and dead letters, run the demo.

    python -m cli submit health_check --wait
    python -m cli jobs --state failed --since 1h
    python -m cli queues

Every error is one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cli.common import CliError

#: The command families, each a module whose ``register_cli(subparsers)`` adds its commands.
FAMILIES = (
    "cli.jobs",
    "cli.demo",
    "cli.documents",
    "cli.media",
    "cli.market",
    "cli.llm",
    "cli.collection",
    "cli.files",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cli", description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in FAMILIES:
        importlib.import_module(name).register_cli(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from broker import ConfigurationError

    try:
        # The domain commands import the actors, which build the broker from the settings.
        parser = build_parser()
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:
        import redis
        import sqlalchemy.exc

        from processing.errors import PermanentError

        if isinstance(error, (PermanentError, ConfigurationError)):
            print(f"error: {error}", file=sys.stderr)
        elif isinstance(error, redis.ConnectionError):
            print(f"error: cannot reach Redis: {error}", file=sys.stderr)
        elif isinstance(error, sqlalchemy.exc.OperationalError):
            print(f"error: database: {error.orig}", file=sys.stderr)
        else:
            raise
        return 1
