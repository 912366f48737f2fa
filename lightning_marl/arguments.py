"""Command-line arguments of the scripts (evaluate, plot, study): a bad one is one line
``error: <argument> ...; allowed: ...`` and exit code 2, no usage dump and no traceback."""
from __future__ import annotations

import argparse
import sys
from typing import NoReturn


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors as one line (argparse prints the usage and exits 2 itself)."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message}; see --help")


def at_least(low: int):
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; allowed: an integer >= {low}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is out of range; allowed: an integer >= {low}")
        return value
    return parse
