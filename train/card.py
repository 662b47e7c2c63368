"""Write a Markdown model card next to an exported model, from its run folder and its metadata.

Everything in the card is read from files (config.json, log.csv, epoch_seconds.csv, the ONNX
metadata) or measured on the exported ONNX file, so a card cannot drift from the model it
describes. Writes ``<model>.md``, ``<model>.curves.png`` and ``<model>.confusion.png``.
"""

from __future__ import annotations

import csv
import hashlib
import inspect
import json
import shutil
from pathlib import Path

import numpy as np

from facevalue.contract import LABELS
from facevalue.evaluate import ECE_BINS, Evaluation
from facevalue.plots import plot_confusion, plot_training_curves
from train import archs

FIT_DEFAULT_SEED = 2017

REMOVED = {
    "leak_into_test": "exact pixel copies of a PublicTest/PrivateTest face (a leak into the test)",
    "near_blank": "near-blank images (pixel standard deviation < 1)",
    "duplicate_copies": "repeated copies of a Training image (one copy kept)",
    "conflicting_label_rows": "every copy of an image whose copies disagree on the label",
}

LAYER_NAMES = {"BatchNormalization": "batch norm", "FusedBatchNorm": "batch norm",
               "Flatten": "flatten", "GlobalAveragePooling2D": "global average pool"}

# What a reader comparing with the literature should know about a shipped model (by name).
NOTES = {
    "fvc2017": "The replica keeps the 2017 code's choices: it max-pools the 48x48 input to "
               "24x24 before the first convolution and trains 10 epochs without augmentation, "
               "dropout or weight decay. deepface's near-twin convolves the full-resolution "
               "input and uses dropout, the likeliest reasons it reports more.",
    "fvnet": "Flip averaging is folded in: +0.5 points (19 of 3,589 faces) for twice the "
             "classifier time, which the int8 copy (fvnet-int8.onnx, the default until 2026-12) "
             "more than pays back. **Short of the target.** The goal was at least 73.5% on "
             "PublicTest within about two hours on 2 CPU cores; this model reaches 66.3%. Every "
             "run so far: (1) `runs/fvnet` from scratch, 45 epochs, 80 minutes: 64.1% (64.4% with "
             "flips); training accuracy on augmented batches (65.7%) stayed level with PublicTest,"
             " so it underfitted. (2) `runs/fvnet-ft`, this model: (1)'s best weights, half the "
             "dropout, a second cosine cycle of 24 epochs, 36 minutes: 65.7% at its best epoch "
             "(6), 66.3% with flips. By the end of (2) training accuracy reached 72% while "
             "PublicTest stayed at 64.5-65%: the narrow network now overfits, so more epochs will "
             "not close the gap. The best epoch is chosen on PublicTest, whose accuracy moves by "
             "about a point from epoch to epoch, so the figure is somewhat optimistic (the final "
             "epoch scored 64.8%). Next to try, on a GPU: width 64 (4x the compute, about 5 hours "
             "on these cores) and 150-300 epochs, as the 73.28% network was trained.",
}

NOTES["fvnet64"] = (
    "**Issue 10's best model. Its training budget is spent (9.73 of about 10 hours) and it "
    "is 3.9 points short of the issue's 73.5% PublicTest target.** Selected on the "
    "validation slice of Training, so the PublicTest figure above is a test figure (the "
    "older fvnet's 66.3% was selected on PublicTest). Trained with photo augmentation (pose, "
    "light, blur, JPEG, noise) and fused batch norm, one 30-epoch cosine cycle per developer "
    "session, each cycle starting from the last one's best weights (`--init`), on 2 CPU "
    "cores (Intel Xeon, AMX-BF16; the last student on an AMD EPYC, the hardware recorded "
    "in each run's config.json). Every run, against training hours for this issue:\n\n"
    "| run | session | epochs | hours (cumulative) | best validation slice | PublicTest "
    "(exported) | faces-dev |\n"
    "|---|---:|---:|---:|---:|---:|---:|\n"
    "| `runs/fvnet64`, from scratch, peak lr 2e-3 | 1 | 30 | 1.08 (1.08) | 64.7% (epoch 30) | "
    "65.3% | |\n"
    "| `runs/fvnet64-c2`, from run 1, peak lr 1e-3 | 1 | 30 | 1.08 (2.16) | 67.8% (epoch 30) | "
    "68.1% | 61.8% |\n"
    "| `runs/fvnet64-c3`, from run 2, peak lr 1e-3 | 2 | 30 | 1.13 (3.29) | "
    "69.1% (epoch 29); 69.7% with flips | 69.2% | 59.7% |\n"
    "| ensemble of c2 and c3 (`train export runs/fvnet64-c2 runs/fvnet64-c3 --out "
    "/tmp/ens.onnx`) | 2 | | | "
    "68.8% with flips, against c3's 69.7% | 69.2% | |\n"
    "| `runs/fvnet-student`: fvnet (width 32) from scratch on c3's soft targets "
    "(`fit --arch fvnet --teacher` the c3 export then shipped as models/fvnet64.onnx, its "
    "sha256 in the run's config.json; 0.7 teacher + 0.3 label) | 2 | 40 | "
    "0.71 (4.00) | 65.7% (epoch 34) | 66.8% (int8 66.7%) | 60.5% (int8) |\n"
    "| `runs/fvnet-s1`: fvnet (width 32), the 2026-11 recipe (no photo augmentation) with "
    "the slice held out | 2 | 45 | 0.75 (4.75) | 64.0% (epoch 37) | 64.2% | 63.6% |\n"
    "| `runs/fvnet-s1-ft`: s1's fine-tuning cycle (`--init`, half dropout, peak lr 5e-4) | 3 "
    "| 24 | 0.64 (5.39) | 64.6% (epoch 12) | 63.3% (no flips, chosen on the slice) | 62.5% |\n"
    "| `runs/fvnet64-c4`, from run 3, peak lr 1e-3 (this model) | 3 | 30 | 1.26 (6.65) | "
    "68.5% (epoch 30); **70.0% with flips**, the exported function, against c3's 69.7% | "
    "**69.6%** | 59.4% |\n"
    "| ensemble of c3 and c4 (`train export runs/fvnet64-c3 runs/fvnet64-c4 --out "
    "/tmp/ens.onnx`) | 3 | | | 69.7% with flips, against c4's 70.0% | 69.4% | |\n"
    "| `runs/fvnet64-c5`, from run c4, peak lr 1e-3, mixup/cutmix (`--mix 0.4`) and 45 "
    "epochs | 4 | 45 | 1.66 (8.31) | 68.5% (epoch 45); 68.9% with flips | 68.9% | 61.3% |\n"
    "| ensemble of c4 and c5 (`train export runs/fvnet64-c4 runs/fvnet64-c5 --out "
    "/tmp/ens.onnx`) | 4 | | | 70.1% with flips, against c4's 70.0% | 69.3% | |\n"
    "| `runs/fvnet-student2`: fvnet (width 32) from scratch on the c4 + c5 ensemble's soft "
    "targets, 30 epochs | 4 | 30 | 0.48 (8.79) | 64.6% (epoch 28); 65.0% with flips | "
    "65.7% | 62.3% |\n"
    "| `runs/fvnet-student3`: fvnet (width 32) from scratch on c4's soft targets "
    "(models/fvnet64.onnx), 40 epochs, 2-core AMD EPYC | 5 | 40 | 0.94 (9.73) | 65.3% "
    "(epoch 34); 65.7% with flips, against the first student's 66.6% | 65.9% | 61.7% |\n"
    "| the first student made as the default is made (`train export runs/fvnet-student`, "
    "`quantize`, `adapt` on faces-dev) | 5 | | | | 64.1% (66.7% as int8 before the "
    "correction) | 75.5% (72.7-78.4%) cross-validated, against the default's 75.7% |\n\n"
    "The last session asked whether a student could replace the default's network. The "
    "students of c3, of c4 and of the c4 + c5 ensemble reach 65.0-66.6% on the slice with "
    "flips, above the 2026-11 fvnet recipe with the same slice held out (s1: 64.0% without "
    "flips), and the best, the first, scores 66.7% on PublicTest as int8 against "
    "fvnet-int8's 66.0%. Corrected for photos exactly as the default is, it reaches 75.5% on "
    "faces-dev cross-validated against the default's 75.7% (one or two of 838 photos, far "
    "inside either interval) and the same 64.1% on PublicTest: the correction spends the "
    "student's FER2013 lead (anger, disgust and fear recall fall most). With nothing to "
    "choose between them on the photos the default is tuned on, the default stays (results "
    "made with it stay reproducible) and no student ships; their weights are in runs/. "
    "What the 3.9 points need is epochs: the published 73-74% networks trained about 300, "
    "c4's chain had 120 and already overfits, so the next run is a longer regularised "
    "cycle (random erasing with mixup at a lower alpha than c5's 0.4) of a wider network, "
    "over many sessions or on a GPU.\n\n"
    "Cycle 5 tried the regularisation cycle 4's overfitting called for: every training face "
    "mixed with another (`fit --mix 0.4`: half the pairs blended, half by a pasted "
    "rectangle, labels in the pixels' shares; `train.data.mix`), 45 epochs instead of 30. "
    "Its training accuracy on the mixed batches ended at 61% against 68.5% on the slice, so "
    "it no longer overfits, but it is no better: 68.9% with flips on the slice against "
    "c4's 70.0%, so c4 stays. The c4 + c5 ensemble scored 70.1% on the slice, 5 of 2,716 "
    "faces above c4 alone, at twice the classifier time: too small a gain for the cost, so "
    "it is not shipped (its PublicTest figure, measured after that choice: 69.3%).\n\n"
    "c4 replaces c3 because the exported function (flip-averaged, as shipped) scores higher "
    "on the slice (69.96% against 69.70%, 7 of 2,716 faces: within noise, but chosen on the "
    "slice, not on PublicTest).\n\n"
    "The student was meant as a faster default: it beats the default fvnet-int8 on "
    "PublicTest (66.7% against 66.0%, and honestly selected) at the same speed, but loses "
    "on faces-dev (60.5%, CI 57.0-63.7%, against 64.3%, CI 61.0-67.5%), so the default is "
    "unchanged and the student is not shipped (its weights are in the repository).\n\n"
    "Cycle 4 gained 0.4 points (69.2% -> 69.6%); mid-cycle its training accuracy on "
    "augmented batches reached 82% against 66% on the slice, so the network overfits and "
    "the next lever is regularisation (mixup or cutmix, random erasing), not another "
    "identical cycle. "
    "Cycle 3 gained 1.1 points on PublicTest, less than cycle 2's 2.8: training accuracy on "
    "the augmented batches (75% mid-cycle, 72% at the end) now runs above the slice, so the "
    "network starts to overfit and further identical cycles will pay less. The snapshot "
    "ensemble of cycles 2 and 3 was selected against on the slice (c2 is weaker and the "
    "snapshots of one chain are close), so c3 ships alone. Folding more test-time views in "
    "(a 1.09x zoom and 2-pixel shifts, each with its mirror) moved c2 by -0.1 to +0.1 points "
    "on the slice: not kept. Target 73.5% on PublicTest; the issue's budget is about 10 "
    "training hours. It is about 4x slower than fvnet (80 against 308 faces/s on one thread "
    "in one run), so it ships as `--model fvnet64`, not as the default. On faces-dev's real "
    "photos each FER2013 gain has come with a loss (61.8%, then 59.7%, against the "
    "default's 64.3%): neutral faces read as anger or sadness, surprise as anger or fear, "
    "and no crop framing (bench/framing.py) or contrast normalisation of the crop changes "
    "that by more than its noise. The plain fvnet recipe without photo augmentation (s1) "
    "stays level with the default on faces-dev (63.6%) while the photo-augmented line falls, "
    "so the photo augmentation does not buy transfer; and fine-tuning s1 (s1-ft) moved "
    "neither figure. What did move real photos is a correction fitted on labelled ones "
    "(`python -m train adapt`, models/fvnet-photo.md, the default since 2026-12): 75.7% on "
    "faces-dev cross-validated against 64.3% for the same network uncorrected, every "
    "labelled class at 65% recall or more, for 1.9 points of PublicTest.")

LITERATURE = [
    ("fvc2017-shape CNNs (deepface's near-twin)", 0.574),
    ("mini-Xception (the `fer` package)", 0.66),
    ("best published single network (VGG variant, Khaireddin & Chen 2021)", 0.7328),
]


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
    if config["epochs"] != recipes[config["arch"]].epochs:
        fit += f" --epochs {config['epochs']}"
    if (mix := config.get("recipe", {}).get("mix_alpha", 0.0)) != recipes[config["arch"]].mix_alpha:
        fit += f" --mix {mix:g}"
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
                     members: list[str] | None = None) -> str:
    """The commands that rebuild this model from the data (``tta``: as exported; ``members``:
    the runs of an ensemble, ``run`` the last of them)."""
    runs = " ".join(f"runs/{name}" for name in members or [run.name])
    export = f"python -m train export {runs} --out models/{model.name} --tta {tta} --force"
    fits = [_fit_command(run, config)]
    while (parent := _init_run(config)) is not None:
        run, config = parent
        fits.insert(0, _fit_command(run, config))
    return "```sh\n" + "\n".join(fits) + f"\n{export}\n```"


def selection_name(config: dict) -> str:
    """What the run selected its epoch on: PublicTest (runs before 2026-12) or its slice."""
    return "PublicTest" if config.get("selected_on", "PublicTest") == "PublicTest" \
        else "the validation slice"


def _data_section(config: dict) -> list[str]:
    removed = config.get("removed", {})
    if selection_name(config) == "PublicTest":
        splits = (f"Splits as published: Training to fit, PublicTest ({config['val_rows']:,} "
                  "faces) to pick the best epoch, choose test-time flips, fit the temperature, "
                  "and report. Our copy has no PrivateTest rows, so the figures below are on "
                  "the split used for selection: slightly optimistic.")
    else:
        splits = (f"Training to fit, less a validation slice ({config['val_fraction']:.0%} of "
                  f"each class, {config['val_rows']:,} faces, the same for every run) that picks "
                  "the best epoch, chooses test-time flips and fits the temperature. PublicTest "
                  "is only measured, so its figures below are honest test figures.")
    lines = ["## Data", "",
             f"FER2013 in Kaggle's CSV layout (`{config['data']}`, sha256 of pixels and labels "
             f"`{config['data_sha256']}`). {splits}", "",
             f"`clean_training` kept {removed.get('kept', config['train_rows']):,} Training rows "
             "and removed:", "",
             "| removed | rows |", "|---|---:|"]
    lines += [f"| {text} | {removed.get(key, 0):,} |" for key, text in REMOVED.items()]
    return lines


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


def _training_section(run: Path, config: dict, meta: dict, curves: str) -> list[str]:
    seconds = training_seconds(run)
    per_epoch = f", {np.mean(seconds):.0f} s per epoch" if seconds else ""
    batches = "augmented training" if config.get("recipe", {}).get("augment") else "training"
    hardware = config.get("hardware") or "hardware not recorded by the run"  # fit records it
    with (run / "log.csv").open(newline="") as f:
        best = list(csv.DictReader(f))[int(meta["facevalue.best_epoch"]) - 1]
    start = ""
    if (parent := _init_run(config)) is not None:
        init, init_config = parent
        init_seconds = training_seconds(init)
        start = (f"Fine-tuned from the best checkpoint of `runs/{init.name}` "
                 f"({init_config['epochs']} epochs, {sum(init_seconds) / 60:.0f} min; "
                 f"{(sum(init_seconds) + sum(seconds)) / 60:.0f} min for the two): ")
    return ["## Training", "",
            f"{start}{meta['facevalue.trained_epochs']} epochs in {sum(seconds) / 60:.0f} min"
            f"{per_epoch} (training and validation) on {hardware}. The best "
            f"accuracy on {selection_name(config)} came at epoch {meta['facevalue.best_epoch']}, "
            f"and that checkpoint is exported: {float(best['accuracy']):.1%} on the {batches} "
            f"batches, {float(best['val_accuracy']):.1%} on {selection_name(config)}.", "",
            f"![training curves]({curves})"]


def _results_section(evaluation: Evaluation, meta: dict, confusion: str) -> list[str]:
    selected_on = meta.get("facevalue.selected_on", "PublicTest")
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


def _calibration_section(meta: dict) -> list[str]:
    where = meta.get("facevalue.selected_on", "PublicTest")
    return ["## Calibration", "",
            f"One temperature T = {float(meta['facevalue.temperature']):.3f}, fitted on {where} "
            "by minimising the negative log-likelihood, divides the logits in the exported "
            f"graph (predictions unchanged). Expected calibration error ({ECE_BINS} bins, on "
            f"{where}): {meta['facevalue.ece_before']} before, {meta['facevalue.ece_after']} "
            f"after ({meta['facevalue.ece_after_crossfit']} when T is fitted on one half and "
            "measured on the other)."]


def _literature_section(accuracy: float, config: dict, name: str) -> list[str]:
    caveat = (", the split also used for selection, so the comparison is indicative only"
              if selection_name(config) == "PublicTest" else
              " (never used for selection), so the comparison is indicative only")
    lines = ["## Compared with the literature", "",
             "| model | FER2013 test accuracy |", "|---|---:|"]
    lines += [f"| {name} | {acc:.1%} |" for name, acc in LITERATURE]
    lines += [f"| **this model** (PublicTest) | **{accuracy:.1%}** |", "",
              "Published figures are mostly on PrivateTest (or both test splits) of the "
              f"original lossless CSV; ours is on PublicTest of a JPEG-recompressed copy{caveat}."]
    return lines + ["", NOTES[name]] if name in NOTES else lines


def write_card(run: str | Path, model: str | Path, evaluation: Evaluation, network) -> Path:
    """Write ``<model>.md`` plus its curves and confusion PNGs; return the card's path.

    ``network`` is the Keras model that was exported (for its layers and parameter count).
    """
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
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    lines = [f"# {model.stem}: FER2013 emotion classifier", "",
             f"`{model.name}` (sha256 `{sha}`), exported by facevalue "
             f"{meta['facevalue.version']}: input `image` float32 (N, 48, 48, 1) grayscale, "
             "pixels / 255; output `probabilities` (N, 7) in the order "
             f"{', '.join(LABELS)}.", ""]
    members = json.loads(meta.get("facevalue.ensemble", "[]"))
    for section in (_data_section(config), _recipe_section(config, network, members),
                    _training_section(run, config, meta, curves.name),
                    _results_section(evaluation, meta, confusion.name),
                    _calibration_section(meta),
                    _literature_section(evaluation.accuracy, config, model.stem),
                    ["## Rebuild", "",
                     rebuild_commands(run, model, config, meta["facevalue.tta"], members)]):
        lines += section + [""]
    card = model.with_suffix(".md")
    card.write_text("\n".join(lines))
    return card
