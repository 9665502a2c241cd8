"""The ``monitor`` command. Each sub-command lives in its own module that exposes
``register(subparsers)``; heavy imports (Faust, chDB) stay inside the command's function so that
``monitor replay`` starts fast."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that register sub-commands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "monitor.commands.replay",
    "monitor.commands.policy",
    "monitor.commands.renewal",
    "monitor.commands.query",
    "monitor.commands.worker",
    "monitor.commands.trace_worker",
    "monitor.commands.produce",
    "monitor.commands.consume",
    "monitor.commands.inspect",
    "monitor.commands.serve",
    "monitor.commands.simulate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitor",
        description="Streaming compliance monitor for medical-insurance designated institutions (定点医药机构).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging()
    code: int = args.func(args)
    return code


def _setup_logging() -> None:
    """Structured logs for every command: ``MONITOR_LOG_JSON=true`` → JSON lines (monitor.log)."""
    import os

    from monitor.log import setup_logging

    flag = os.environ.get("MONITOR_LOG_JSON", "").strip().lower()
    setup_logging(json_lines=flag in {"1", "true", "yes", "on"}, level=os.environ.get("MONITOR_LOG_LEVEL", "INFO"))


if __name__ == "__main__":
    sys.exit(main())
