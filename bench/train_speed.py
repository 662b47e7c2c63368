"""Training throughput: images/s of one training step, TensorFlow beside a plain PyTorch reference.

Each architecture is timed with Keras's batch norm, with the fused batch norm it trains with
(``train.archs.FusedBatchNorm``) and without batch norm, in TensorFlow (``model.fit`` on
batches already in memory, as ``python -m train fit`` runs them, in mixed bfloat16) and the
same network in PyTorch (bf16 autocast, channels_last, AdamW), the reference. The variants
are interleaved ``--repeat`` times in one run, because this machine's speed moves by 2x
within minutes: compare within a row and a run, never across runs.

    pip install torch==2.13.0   # the reference only; facevalue never needs it
    python bench/train_speed.py --readme bench/README.md

Augmentation is left out on purpose (it runs beside the step in tf.data, about 5% of the
time): this measures the step.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from run import update_readme  # noqa: E402

BATCH = 64
# (architecture, width, norm) triples; fvc2017 has no batch norm to fuse.
VARIANTS = [("fvnet", 32, "keras"), ("fvnet", 32, "fused"), ("fvnet", 32, "none"),
            ("fvnet64", 64, "keras"), ("fvnet64", 64, "fused"), ("fvnet64", 64, "none"),
            ("fvc2017", 0, "none")]


def tf_images_per_s(arch: str, width: int, norm: str, steps: int) -> float:
    """Images/s of Keras ``fit`` steps (AdamW, cross-entropy, bf16) on in-memory batches."""
    import keras
    import tensorflow as tf

    from train import archs

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = (archs.fvc2017() if arch == "fvc2017" else
                 archs.fvnet(width=width, dropout_scale=0.5, norm=norm))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.compile(keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                  keras.losses.CategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.random((BATCH * 8, 48, 48, 1), np.float32)
    y = np.eye(7, dtype=np.float32)[rng.integers(0, 7, len(x))]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache().repeat()
    model.fit(data, steps_per_epoch=5, epochs=1, verbose=0)  # trace and warm up
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * BATCH / (time.perf_counter() - started)


def torch_images_per_s(arch: str, width: int, norm: str, steps: int) -> float:
    """Images/s of the same network's training step in PyTorch (bf16 autocast)."""
    import torch
    from torch import nn

    def block(cin: int, cout: int, drop: float) -> list[nn.Module]:
        layers: list[nn.Module] = []
        for c in (cin, cout):
            layers += [nn.Conv2d(c, cout, 3, padding=1, bias=norm == "none"),
                       nn.BatchNorm2d(cout) if norm != "none" else nn.Identity(), nn.ReLU()]
        return [*layers, nn.MaxPool2d(2), nn.Dropout(drop)]

    if arch == "fvc2017":
        net = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(1, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3),
                            nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 128, 3), nn.ReLU(),
                            nn.Conv2d(128, 128, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(128 * 3 * 3, 1024), nn.ReLU(), nn.Linear(1024, 1024),
                            nn.ReLU(), nn.Linear(1024, 7))
    else:
        widths = [1] + [width * 2**i for i in range(4)]
        layers = [m for i in range(4) for m in block(widths[i], widths[i + 1], 0.05 * (i + 1))]
        net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(widths[-1], 256, bias=norm == "none"),
                            nn.BatchNorm1d(256) if norm != "none" else nn.Identity(),
                            nn.ReLU(), nn.Dropout(0.25), nn.Linear(256, 7))
    net = net.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    loss = nn.CrossEntropyLoss()
    x = torch.rand(BATCH, 1, 48, 48).to(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (BATCH,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss(net(x), y)
        value.backward()
        optimizer.step()

    for _ in range(5):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - started)


def child(engine: str, arch: str, width: int, norm: str, steps: int) -> None:
    """One measurement in a fresh process (no state shared between variants)."""
    measure = tf_images_per_s if engine == "tf" else torch_images_per_s
    print(f"{measure(arch, width, norm, steps):.1f}")


def measure(engine: str, variant: tuple[str, int, str], steps: int) -> float:
    arch, width, norm = variant
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, __file__, "child", engine, arch, str(width), norm,
                           str(steps)], capture_output=True, text=True, env=env, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def table(results: dict[tuple[str, tuple[str, int, str]], list[float]], repeat: int) -> str:
    """Markdown: median and range per variant and engine, and the TF / PyTorch ratio."""
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    lines = [f"Training step, batch {BATCH}, mixed bf16, {os.cpu_count()} cores ({cpu}), "
             f"median of {repeat} interleaved runs (range). `python bench/train_speed.py`.", "",
             "| architecture | batch norm | TensorFlow images/s | PyTorch images/s "
             "| TF / PyTorch |",
             "|---|---|---:|---:|---:|"]
    names = {"keras": "Keras `BatchNormalization`", "fused": "fused (`FusedBatchNorm`)",
             "none": "none"}
    for variant in VARIANTS:
        tf_runs, torch_runs = results[("tf", variant)], results[("torch", variant)]
        ratios = [a / b for a, b in zip(tf_runs, torch_runs, strict=True)]
        norm = names[variant[2]] if variant[0] != "fvc2017" else "none (the 2017 network)"
        torch_norm = "" if variant[2] != "keras" else " (BatchNorm2d)"
        lines.append(
            f"| {variant[0]} | {norm} | {statistics.median(tf_runs):,.0f} "
            f"({min(tf_runs):,.0f}-{max(tf_runs):,.0f}) | {statistics.median(torch_runs):,.0f} "
            f"({min(torch_runs):,.0f}-{max(torch_runs):,.0f}){torch_norm} | "
            f"{statistics.median(ratios):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        _, _, engine, arch, width, norm, steps = sys.argv
        child(engine, arch, int(width), norm, int(steps))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--readme", type=Path, help="write the table into this README")
    args = parser.parse_args()
    results: dict[tuple[str, tuple[str, int, str]], list[float]] = {}
    for _ in range(args.repeat):
        for variant in VARIANTS:
            for engine in ("tf", "torch"):
                rate = measure(engine, variant, args.steps)
                results.setdefault((engine, variant), []).append(rate)
                print(f"{engine:5} {variant}: {rate:,.0f} images/s", flush=True)
    text = table(results, args.repeat)
    print(text)
    if args.readme:
        update_readme(args.readme, text, "train-speed")


if __name__ == "__main__":
    main()
