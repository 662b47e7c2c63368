"""`python -m train fit|export|quantize|adapt|card`: the commands that rebuild a shipped model."""

from __future__ import annotations

import logging
import sys

import click

from facevalue.cli import TRAIN_EXTRA, Commands
from train.correction import ANCHOR_WEIGHT


class _Commands(Commands):
    """facevalue's group (a FacevalueError is one line), and a missing [train] extra is one
    line too: fit and export import TensorFlow."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in ("tensorflow", "keras", "tf2onnx"):
                raise
            raise click.ClickException(TRAIN_EXTRA) from e


@click.group(cls=_Commands)
def cli() -> None:
    """Train FER2013 emotion classifiers and export them to ONNX for facevalue."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--data", required=True, type=click.Path(exists=True),
              help="fer2013.csv(.gz) or an image-folder tree (train/, test/).")
@click.option("--arch", type=click.Choice(["fvc2017", "fvnet", "fvnet64", "fvlite"]),
              default="fvnet",
              show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder; an unfinished run there is resumed.")
@click.option("--epochs", type=int, default=None, help="Override the recipe's epochs.")
@click.option("--seed", type=int, default=2017, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32",
              show_default=True, help="bf16 mixed precision: about 2x faster on AVX512-BF16 CPUs.")
@click.option("--init", type=click.Path(exists=True, file_okay=False), default=None,
              help="Fine-tune from this finished run's best weights (a second, lighter cycle).")
@click.option("--teacher", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Distil: mix this exported classifier's probabilities into the targets.")
@click.option("--mix", "mix_alpha", type=float, default=None,
              help="Mixup/cutmix Beta(a, a) parameter, overriding the recipe's (0: none).")
@click.option("--ema", type=float, default=None,
              help="Average the weights with this momentum a step, overriding the recipe's "
                   "(0: none; 0.999 is about two epochs).")
@click.option("--photo-weight", type=float, default=None,
              help="A --photos face's weight in the loss against a FER2013 face's, overriding "
                   "the recipe's.")
@click.option("--blur", type=float, default=None,
              help="The share of training faces softened (photo augmentation), overriding the "
                   "recipe's 0.3: real photos' faces are softer than FER2013's.")
@click.option("--photo-partial", type=float, default=None,
              help="The share of a --photos face's loss that asks only which of the photo set's "
                   "labelled classes it shows (0: none), overriding the recipe's.")
@click.option("--teacher-views", type=int, default=None,
              help="With --teacher: the teacher scores this many augmented views of each face "
                   "once, and each epoch learns one view's own targets (0: fixed targets).")
@click.option("--photos", nargs=2, type=click.Path(exists=True), default=None,
              metavar="FOLDER LABELS",
              help="Also train on these labelled photos (a folder and its labels CSV).")
@click.option("--dev", nargs=2, type=click.Path(exists=True), default=None,
              metavar="FOLDER LABELS",
              help="Select the best epoch on these labelled photos too (never trained on).")
@click.option("--limit", type=int, default=None, hidden=True, help="Use the first N rows only.")
def fit(data, arch, out, epochs, seed, precision, init, teacher, mix_alpha, ema, photo_weight,
        blur, photo_partial, teacher_views, photos, dev, limit) -> None:
    """Fit ARCH on the Training rows, selecting the best epoch on a slice of them."""
    from train.fit import fit as run_fit

    run_fit(data, arch, out, epochs=epochs, seed=seed, precision=precision, init=init,
            teacher=teacher, mix_alpha=mix_alpha, ema=ema, photo_weight=photo_weight,
            blur=blur, photo_partial=photo_partial, teacher_views=teacher_views,
            photos=photos, dev=dev, limit=limit,
            verbose=1 if sys.stderr.isatty() else 2)


force_option = click.option("--force", is_flag=True,
                            help="Replace a shipped model in models/ (its card and sha256 too).")


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="ONNX file to write [default: exports/RUN.onnx]; models/NAME.onnx ships it.")
@click.option("--data", type=click.Path(exists=True), default=None,
              help="FER2013 data for the PublicTest checks [default: the run's own data].")
@click.option("--tta", type=click.Choice(["auto", "hflip", "none"]), default="auto",
              show_default=True, help="Fold flip averaging in (auto: only if it helps).")
@click.option("--epoch", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="The checkpoint: the run's selected epoch, or its last (e.g. when a photo "
                   "correction will refit the photos and the slice alone should choose).")
@click.option("--card/--no-card", default=True, show_default=True,
              help="Also write the model card NAME.md and its PNGs next to the model.")
@force_option
def export(runs, out, data, tta, epoch, card, force) -> None:
    """Export the best (or last) checkpoint of RUN (or the mean of several RUNS' logits: a
    snapshot ensemble in one graph) to ONNX with calibration and the facevalue contract."""
    from pathlib import Path

    from train.card import write_card
    from train.export import export as run_export
    from train.export_card import export_card

    out = out or str(Path("exports") / f"{Path(runs[-1]).name}.onnx")
    result = run_export(list(runs), out, data=data, tta=tta, force=force, epoch=epoch)
    cal = result.calibration
    click.echo(f"wrote {out}: PublicTest accuracy {result.evaluation.accuracy:.4f} "
               f"(flips {result.tta}), T {cal.temperature:.3f}, ECE {cal.ece_before:.4f} -> "
               f"{cal.ece_after:.4f}, parity {result.parity_max_abs:.1e}")
    if card:
        made = export_card(runs[-1], out, result.evaluation, result.network)
        click.echo(f"wrote {write_card(out, made)}")


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="ONNX file to write, e.g. models/NAME-int8.onnx (a card NAME-int8.md too).")
@click.option("--data", required=True, type=click.Path(exists=True),
              help="The FER2013 data MODEL was trained on: Training faces calibrate, "
                   "PublicTest faces check.")
@force_option
def quantize(model, out, data, force) -> None:
    """Write an int8 copy of MODEL (an exported classifier), if it agrees with MODEL."""
    from train.card import write_card
    from train.quantize import int8_card
    from train.quantize import quantize as run_quantize

    result = run_quantize(model, out, data, force=force)
    speed = result.faces_per_s
    click.echo(f"wrote {out}: PublicTest accuracy {result.int8_eval.accuracy:.4f} (float "
               f"{result.float_eval.accuracy:.4f}), top emotion agrees on "
               f"{result.agreement:.2%}, {speed['int8']:,.0f} against {speed['float']:,.0f} "
               f"faces/s on one thread")
    click.echo(f"wrote {write_card(result.path, int8_card(result))}")


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--photos", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder of labelled photos.")
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV with path (or file) and label columns, as facevalue evaluate reads.")
@click.option("--data", required=True, type=click.Path(exists=True),
              help="The FER2013 data MODEL was trained on: Training faces anchor the "
                   "correction, PublicTest faces measure it.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="ONNX file to write, e.g. models/NAME-photo.onnx.")
@click.option("--anchor-weight", type=click.FloatRange(min=0, min_open=True),
              default=ANCHOR_WEIGHT,
              show_default=True,
              help="Weight of the FER2013 anchor against the photos' 1: higher keeps more "
                   "FER2013 accuracy and corrects the photos less.")
@force_option
def adapt(model, photos, labels, data, out, anchor_weight, force) -> None:
    """Write MODEL with a correction for real photos fitted on labelled ones (the
    cross-validated figures are the ones to report; see train/correction.py)."""
    from train.adapt import adapt as run_adapt
    from train.adapt import adapted_card
    from train.card import write_card

    result = run_adapt(model, photos, labels, data, out, force=force,
                       anchor_weight=anchor_weight)
    click.echo(f"wrote {out}: {result.photos} of {result.labelled} labelled photos had a face; "
               f"penalty {result.penalty:g}, parity {result.parity_max_abs:.1e}, PublicTest "
               f"accuracy {result.public[1].accuracy:.4f} (before {result.public[0].accuracy:.4f})")
    for name, figures in (("before", result.before), ("cross-validated", result.crossval),
                          ("in-sample", result.in_sample)):
        low, high = figures["accuracy_ci"]
        recall = ", ".join(f"{k} {v:.2f}" for k, v in figures["recall"].items())
        click.echo(f"{name:>16}: accuracy {figures['accuracy']:.4f} ({low:.4f}-{high:.4f}); "
                   f"recall {recall}")
    rebuild = (f"python -m train adapt {model} --photos {photos} --labels {labels} "
               f"--data {data} --out {out}"
               + (f" --anchor-weight {anchor_weight:g}" if anchor_weight != ANCHOR_WEIGHT else "")
               + (" --force" if force else ""))
    click.echo(f"wrote {write_card(result.path, adapted_card(result, model, rebuild))}")


@cli.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--model", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The ONNX file exported from RUN.")
@click.option("--data", type=click.Path(exists=True), default=None,
              help="FER2013 data to score PublicTest on [default: the run's own data].")
def card(run, model, data) -> None:
    """Rewrite the model card of MODEL (exported from RUN) without exporting again."""
    from pathlib import Path

    from facevalue.classify import Classifier
    from facevalue.evaluate import evaluate
    from train.card import write_card
    from train.export import load_float32
    from train.export_card import export_card

    checkpoint = Classifier(model, "cpu").contract.extra.get("facevalue.checkpoint", "best")
    network, config = load_float32(Path(run), checkpoint)
    evaluation = evaluate(data or config["data"], "PublicTest", model)
    click.echo(f"wrote {write_card(model, export_card(run, model, evaluation, network))}")


if __name__ == "__main__":
    cli()
