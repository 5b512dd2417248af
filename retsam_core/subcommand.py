"""One way to expose a command both as a `retsam` subcommand and as a standalone entry point (`jobs/*.py`,
`python -m ...`): the module supplies its arguments and handler, this makes `register` and `main`."""

from __future__ import annotations

import argparse
from typing import Callable


def subcommand(name: str, help_: str, doc: str | None, add_arguments: Callable[[argparse.ArgumentParser], None],
               handler: Callable[[argparse.Namespace], int]):
    """(register(subparsers), main(argv=None) -> exit code) for one command."""

    def register(subparsers) -> None:
        p = subparsers.add_parser(name, help=help_, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(p)
        p.set_defaults(func=handler)

    def main(argv: list[str] | None = None) -> int:
        ap = argparse.ArgumentParser(prog=f"retsam-{name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(ap)
        return handler(ap.parse_args(argv))

    return register, main
