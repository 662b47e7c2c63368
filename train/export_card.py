"""The card of an exported model, from its run folder and its metadata.

Everything in it is read from files (config.json, log.csv, epoch_seconds.csv, the ONNX
metadata) or measured on the exported ONNX file, so a card cannot drift from the model it
describes. ``train.card.write_card`` writes it as ``<model>.md``; ``export_card`` draws
``<model>.curves.png`` and ``<model>.confusion.png`` beside it.
"""

from __future__ import annotations

import csv
import inspect
import json
import shutil
from pathlib import Path

import numpy as np

from facevalue.contract import LABELS
from facevalue.evaluate import ECE_BINS, Evaluation
from facevalue.plots import plot_confusion, plot_training_curves
from train import archs
from train.card import NOTES, Card

FIT_DEFAULT_SEED = 2017

REMOVED = {
    "leak_into_test": "exact pixel copies of a PublicTest/PrivateTest face (a leak into the test)",
    "near_blank": "near-blank images (pixel standard deviation < 1)",
    "duplicate_copies": "repeated copies of a Training image (one copy kept)",
    "conflicting_label_rows": "every copy of an image whose copies disagree on the label",
}

LAYER_NAMES = {"BatchNormalization": "batch norm", "FusedBatchNorm": "batch norm",
               "Flatten": "flatten", "GlobalAveragePooling2D": "global average pool"}

# The published figures every exported model's card compares with (a Markdown table).
LITERATURE = NOTES / "fer2013-literature.md"


def training_seconds(run: Path) -> list[float]:
    """Wall-clock seconds of each epoch (training plus validation), from epoch_seconds.csv."""
    path = run / "epoch_seconds.csv"
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [float(row[1]) for row in csv.reader(f) if len(row) == 2]


def _fit_command(run: Path, config: dict) -> str:
    recipes = archs.FINETUNE_RECIPES if config.get("init") else \
        archs.DISTILL_RECIPES if config.get("teacher") else archs.RECIPES
    fit = (f"python -m train fit --data {config['data']} --arch {config['arch']} "
           f"--out runs/{run.name}")
    if config.get("init"):
        fit += f" --init runs/{Path(config['init']).name}"
    if config.get("teacher"):  # the very file: its sha256 is in config.json
        fit += f" --teacher models/{config['teacher']['model']}"
    for key in ("photos", "dev"):  # labelled photos trained on, and selected on
        if photos := config.get(key):
            fit += f" --{key} {photos['folder']} {photos['labels']}"
    if config["epochs"] != recipes[config["arch"]].epochs:
        fit += f" --epochs {config['epochs']}"
    recipe = recipes[config["arch"]]
    for key, option in archs.OVERRIDES.items():
        if (value := archs.recorded(config, key)) != getattr(recipe, key):
            fit += f" {option} {value:g}"
    if config.get("seed", FIT_DEFAULT_SEED) != FIT_DEFAULT_SEED:
        fit += f" --seed {config['seed']}"
    if config.get("precision", "fp32") != "fp32":
        fit += f" --precision {config['precision']}"
    return fit


def _init_run(config: dict) -> tuple[Path, dict] | None:
    """The run a fine-tuned run started from, and its config (None for a run from scratch)."""
    if not config.get("init"):
        return None
    init = Path(config["init"])
    return init, json.loads((init / "config.json").read_text())


def rebuild_commands(run: Path, model: Path, config: dict, tta: str,
                     members: list[str] | None = None, last: bool = False) -> str:
    """The commands that rebuild this model from the data (``tta``: as exported; ``members``:
    the runs of an ensemble, ``run`` the last of them; ``last``: the last epoch exported)."""
    runs = " ".join(f"runs/{name}" for name in members or [run.name])
    export = (f"python -m train export {runs} --out models/{model.name} --tta {tta}"
              + (" --epoch last" if last else "") + " --force")
    fits = [_fit_command(run, config)]
    while (parent := _init_run(config)) is not None:
        run, config = parent
        fits.insert(0, _fit_command(run, config))
    return "\n".join([*fits, export])


def selection_name(config: dict) -> str:
    """The faces the run chose flips and temperature on: PublicTest (runs before 2026-12) or
    its slice (also where a run with dev photos chose its epoch partly on those)."""
    return "PublicTest" if config.get("selected_on", "PublicTest") == "PublicTest" \
        else "the validation slice"


def _data_section(config: dict, last: bool = False) -> list[str]:
    """``last``: a person chose the last epoch over the rule's; on what, the notes say."""
    removed = config.get("removed", {})
    if selection_name(config) == "PublicTest":
        splits = (f"Splits as published: Training to fit, PublicTest ({config['val_rows']:,} "
                  "faces) to pick the best epoch, choose test-time flips, fit the temperature, "
                  "and report. Our copy has no PrivateTest rows, so the figures below are on "
                  "the split used for selection: slightly optimistic.")
    else:
        picked = (" (not the one exported here: the last epoch was taken instead, see "
                  "Training)" if last else "")
        measured = ("by the export; whether it informed the choice of the last epoch is for "
                    "the notes below to say" if last
                    else "so its figures below are honest test figures")
        splits = (f"Training to fit, less a validation slice ({config['val_fraction']:.0%} of "
                  f"each class, {config['val_rows']:,} faces, the same for every run) that picks "
                  f"the best epoch{picked}, chooses test-time flips and fits the temperature. "
                  f"PublicTest is only measured, {measured}.")
    lines = ["## Data", "",
             f"FER2013 in Kaggle's CSV layout (`{config['data']}`, sha256 of pixels and labels "
             f"`{config['data_sha256']}`). {splits}", "",
             f"`clean_training` kept {removed.get('kept', config['train_rows']):,} Training rows "
             "and removed:", "",
             "| removed | rows |", "|---|---:|"]
    lines += [f"| {text} | {removed.get(key, 0):,} |" for key, text in REMOVED.items()]
    if photos := config.get("photos"):
        weight = config.get("recipe", {}).get("photo_weight", 1.0)
        lines += ["", f"Also trained on {photos['rows']:,} labelled photos (`{photos['folder']}`, "
                  f"labels `{photos['labels']}`; sha256 of labels, photos and crop settings "
                  f"`{photos['sha256']}`"
                  f"; {_counts(photos)}), cropped by facevalue's own detect, align and crop "
                  "path (`train.photos`), so training sees what scoring sees; each photo "
                  f"weighs {weight:g} of a FER2013 face in the loss and keeps its label "
                  "(no teacher's probabilities)."]
    if dev := config.get("dev"):
        lines += ["", f"Selection also used {dev['rows']:,} other labelled photos "
                  f"(`{dev['folder']}`, sha256 `{dev['sha256']}`; {_counts(dev)}), never "
                  f"trained on: the {config['selected_on']} picks the epoch, so figures on "
                  "those photos are not unbiased."]
    if teacher := config.get("teacher"):
        lines += ["", f"Distilled: the FER2013 faces' targets are {teacher['weight']:g} x the "
                  f"probabilities of `{teacher['model']}` (sha256 `{teacher['sha256']}`) plus "
                  f"{1 - teacher['weight']:g} x their labels"
                  + (f"; the teacher scored {views} augmented views of each face once, and "
                     "each epoch the student saw one of them at random with that view's "
                     "probabilities (`train.views`)." if (views := archs.recorded(
                         config, "teacher_views")) else ".")]
    return lines


def _counts(photos: dict) -> str:
    return ", ".join(f"{label} {n:,}" for label, n in photos.get("per_class", {}).items())


def describe_layers(network) -> str:
    """The network's layers in one line, e.g. ``conv 64 3x3 relu -> max-pool 2x2 -> ...``."""
    parts = []
    for layer in network.layers:
        cfg, kind = layer.get_config(), type(layer).__name__
        act = f" {cfg['activation']}" if cfg.get("activation", "linear") != "linear" else ""
        if kind == "Conv2D":
            parts.append(f"conv {cfg['filters']} {'x'.join(map(str, cfg['kernel_size']))}{act}")
        elif kind == "Dense":
            parts.append(f"dense {cfg['units']}{act}")
        elif kind == "MaxPooling2D":
            parts.append(f"max-pool {'x'.join(map(str, cfg['pool_size']))}")
        elif kind == "Dropout":
            parts.append(f"dropout {cfg['rate']:.2g}")
        elif kind == "Activation":
            parts.append(cfg["activation"])
        elif kind != "InputLayer":
            parts.append(LAYER_NAMES.get(kind, kind))
    return " → ".join(parts)


def _recipe_section(config: dict, network, members: list[str]) -> list[str]:
    doc = " ".join((inspect.getdoc(archs.ARCHS[config["arch"]]) or "").split())
    recipe = config.get("recipe", {})
    ensemble = (f" An ensemble of {len(members)} snapshots of one training run (the end of "
                f"each cosine cycle: {', '.join(f'`runs/{m}`' for m in members)}): the graph "
                "averages their logits, so it holds and computes "
                f"{len(members)} x {network.count_params():,} parameters."
                if len(members) > 1 else "")
    lines = ["## Architecture and recipe", "",
             f"`{config['arch']}`, {network.count_params():,} parameters. {doc}{ensemble}", "",
             f"Layers: {describe_layers(network)} (logits; softmax in the exported graph).",
             "", "| setting | value |", "|---|---|"]
    # distill_weight means something only with a teacher
    unused = {"epochs"} | (set() if config.get("teacher") else {"distill_weight"})
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in recipe.items() if k not in unused]
    lines += [f"| epochs | {config['epochs']} |", f"| seed | {config.get('seed')} |",
              f"| precision | {config.get('precision', 'fp32')} |"]
    return lines


def _exports_last(meta: dict) -> bool:
    """Whether the file holds the run's last epoch rather than its best (``--epoch last``)."""
    return meta.get("facevalue.checkpoint") == "last"


def _training_section(run: Path, config: dict, meta: dict, curves: str) -> list[str]:
    seconds = training_seconds(run)
    per_epoch = f", {np.mean(seconds):.0f} s per epoch" if seconds else ""
    batches = "augmented training" if config.get("recipe", {}).get("augment") else "training"
    hardware = config.get("hardware") or "hardware not recorded by the run"  # fit records it
    with (run / "log.csv").open(newline="") as f:
        log = list(csv.DictReader(f))
    best = log[int(meta["facevalue.best_epoch"]) - 1]
    shown = log[-1] if _exports_last(meta) else best
    start = ""
    if (parent := _init_run(config)) is not None:
        init, init_config = parent
        init_seconds = training_seconds(init)
        start = (f"Fine-tuned from the best checkpoint of `runs/{init.name}` "
                 f"({init_config['epochs']} epochs, {sum(init_seconds) / 60:.0f} min; "
                 f"{(sum(init_seconds) + sum(seconds)) / 60:.0f} min for the two): ")
    criterion = (f"The best {config['selected_on']}" if best.get("select")
                 else f"The best accuracy on {selection_name(config)}")
    dev = "".join(f", {float(shown[key]):.1%} {name}" for key, name in (
        ("dev_accuracy", "accuracy on the dev photos"), ("dev_recall", "their mean recall"))
        if shown.get(key))
    which = (f"{meta['facevalue.best_epoch']}, and that checkpoint is exported: "
             if not _exports_last(meta) else
             f"{meta['facevalue.best_epoch']}; the last epoch's checkpoint is exported "
             f"instead (`--epoch last`), epoch {len(log)}: ")
    averaged = (" The weights are an exponential average (momentum "
                f"{config['recipe']['ema']:g} a step), evaluated and saved as such."
                if config.get("recipe", {}).get("ema") else "")
    return ["## Training", "",
            f"{start}{meta['facevalue.trained_epochs']} epochs in {sum(seconds) / 60:.0f} min"
            f"{per_epoch} (training and validation) on {hardware}. {criterion} came at epoch "
            f"{which}{float(shown['accuracy']):.1%} on the {batches} batches, "
            f"{float(shown['val_accuracy']):.1%} on the validation slice{dev}.{averaged}", "",
            f"![training curves]({curves})"]


def _results_section(evaluation: Evaluation, meta: dict, confusion: str) -> list[str]:
    selected_on = _tuned_on(meta)
    by_tta = json.loads(meta.get("facevalue.selection_accuracy_by_tta")
                        or meta["facevalue.public_test_accuracy_by_tta"])
    folded = "folded into the graph" if meta["facevalue.tta"] == "hflip" else "not used"
    lines = ["## PublicTest results (the exported ONNX file, onnxruntime)", "",
             f"Accuracy **{evaluation.accuracy:.2%}** on {evaluation.n:,} faces, macro F1 "
             f"{evaluation.macro_f1:.3f}. Flip averaging ({selected_on}): {by_tta['none']:.2%} "
             f"without, {by_tta['hflip']:.2%} with; {folded}. onnxruntime matches TensorFlow "
             f"within {meta['facevalue.parity_max_abs']} (max abs, probabilities).", "",
             "| class | precision | recall | F1 | faces |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {c.label} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | {c.support} |"
              for c in evaluation.per_class]
    return lines + ["", f"![confusion matrix]({confusion})"]


def _tuned_on(meta: dict) -> str:
    """The faces an export chose flips and fitted the temperature on."""
    return selection_name({"selected_on": meta.get("facevalue.selected_on", "PublicTest")})


def _calibration_section(meta: dict) -> list[str]:
    where = _tuned_on(meta)
    return ["## Calibration", "",
            f"One temperature T = {float(meta['facevalue.temperature']):.3f}, fitted on {where} "
            "by minimising the negative log-likelihood, divides the logits in the exported "
            f"graph (predictions unchanged). Expected calibration error ({ECE_BINS} bins, on "
            f"{where}): {meta['facevalue.ece_before']} before, {meta['facevalue.ece_after']} "
            f"after ({meta['facevalue.ece_after_crossfit']} when T is fitted on one half and "
            "measured on the other)."]


def _literature_section(accuracy: float, config: dict) -> list[str]:
    caveat = (", the split also used for selection, so the comparison is indicative only"
              if selection_name(config) == "PublicTest" else
              " (never used for selection), so the comparison is indicative only")
    return ["## Compared with the literature", "",
            *LITERATURE.read_text().strip("\n").splitlines(),
            f"| **this model** (PublicTest) | **{accuracy:.1%}** |", "",
            "Published figures are mostly on PrivateTest (or both test splits) of the "
            f"original lossless CSV; ours is on PublicTest of a JPEG-recompressed copy{caveat}."]


def export_card(run: str | Path, model: str | Path, evaluation: Evaluation, network) -> Card:
    """The card of ``model``, exported from ``run``; draws the curves and confusion PNGs it
    shows beside the model. ``network`` is the Keras model that was exported (for its layers
    and parameter count)."""
    import onnx

    run, model = Path(run), Path(model)
    config = json.loads((run / "config.json").read_text())
    meta = {p.key: p.value for p in onnx.load(model, load_external_data=False).metadata_props}
    curves, confusion = model.with_suffix(".curves.png"), model.with_suffix(".confusion.png")
    if (run / "curves.png").exists():
        shutil.copyfile(run / "curves.png", curves)
    else:
        plot_training_curves(run / "log.csv", curves, title=f"{config['arch']} on FER2013")
    plot_confusion(np.array(evaluation.confusion), LABELS, confusion,
                   title=f"{model.stem} on PublicTest ({evaluation.accuracy:.1%})")
    members = json.loads(meta.get("facevalue.ensemble", "[]"))
    return Card(
        "FER2013 emotion classifier",
        f", exported by facevalue {meta['facevalue.version']}: input `image` float32 "
        "(N, 48, 48, 1) grayscale, pixels / 255; output `probabilities` (N, 7) in the order "
        f"{', '.join(LABELS)}.",
        (_data_section(config, _exports_last(meta)), _recipe_section(config, network, members),
         _training_section(run, config, meta, curves.name),
         _results_section(evaluation, meta, confusion.name), _calibration_section(meta),
         _literature_section(evaluation.accuracy, config)),
        rebuild_commands(run, model, config, meta["facevalue.tta"], members,
                         last=_exports_last(meta)))
