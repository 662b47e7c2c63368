"""`python -m train fit|export`: the two commands that rebuild a shipped model."""

from __future__ import annotations

import logging
import sys

import click


@click.group()
def cli() -> None:
    """Train FER2013 emotion classifiers and export them to ONNX for facevalue."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--data", required=True, type=click.Path(exists=True),
              help="fer2013.csv(.gz) or an image-folder tree (train/, test/).")
@click.option("--arch", type=click.Choice(["fvc2017", "fvnet"]), default="fvnet",
              show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder; an unfinished run there is resumed.")
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs.")
@click.option("--seed", type=int, default=2017, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True, help="bf16 mixed precision: about 2x faster on AVX512-BF16 CPUs.")
@click.option("--limit", type=int, default=None, hidden=True, help="Use the first N rows only.")
def fit(data, arch, out, epochs, seed, precision, limit) -> None:
    """Fit ARCH on the Training rows, selecting the best epoch on PublicTest."""
    from train.fit import fit as run_fit

    run_fit(data, arch, out, epochs=epochs, seed=seed, precision=precision, limit=limit,
            verbose=1 if sys.stderr.isatty() else 2)


if __name__ == "__main__":
    cli()
