"""The `facevalue` command: a thin Click layer over the library; it parses and reports.

Heavy modules are imported inside each command so `facevalue --help` and `--version` answer
at once.
"""

from __future__ import annotations

import logging

import click

from facevalue import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="facevalue")
def cli() -> None:
    """Emotion scores from photos of company executives, ready for a regression."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")


def main() -> None:
    """Console-script entry point."""
    cli()
