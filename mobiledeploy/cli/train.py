"""`mobiledeploy train`: train or fine-tune a MobileNet on a labelled data set."""

from __future__ import annotations

import click

from mobiledeploy.accuracy.train import TrainConfig, train as run_train
from mobiledeploy.cli.common import click_options, emit_json, json_option, stdout_console
from mobiledeploy.cli.progress import progress_renderer
from mobiledeploy.units import format_size


@click.command()
@click_options(TrainConfig, "data", "out", "arch", "alpha", "resolution", "epochs", "batch_size", "learning_rate",
               "optimizer", "shift", "flip", "val_fraction", "preprocessing", "labels_file", "init", "limit", "seed")
@json_option
def train(json_path, **kwargs) -> None:
    """Train a MobileNet and report its accuracy on held-out data.

    \b
    Example (the committed reference model):
      mobiledeploy train --data digits --alpha 0.25 --res 32 --epochs 60 \\
          --out models/mobilenet_v1_0.25_32_digits.keras
    """
    cfg = TrainConfig(**kwargs)
    with progress_renderer(status=False) as progress:
        result = run_train(cfg, progress=progress)
    emit_json(json_path, result.to_json())
    if json_path == "-":
        return

    top5 = f", top-5 {result.test_top5:.2%}" if result.test_top5 is not None else ""
    stdout_console().print(
        f"saved {result.out} ({format_size(result.size_bytes)}): {result.arch} alpha {result.alpha} "
        f"res {result.resolution}, {result.classes} classes, preprocessing {result.preprocessing}\n"
        f"test top-1 {result.test_top1:.2%}{top5} on {result.test_samples} samples ({result.test_split}); "
        f"train top-1 {result.train_top1:.2%} on {result.train_samples}; {result.seconds:.0f} s")
