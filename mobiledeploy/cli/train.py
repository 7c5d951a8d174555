"""`mobiledeploy train`: train or fine-tune a MobileNet on a labelled data set."""

from __future__ import annotations

import click

from mobiledeploy.cli.common import emit_json, json_option, stderr_console, stdout_console


@click.command()
@click.option("--data", "data", default="digits", show_default=True, metavar="SOURCE",
              help="'digits', an image folder with class sub-folders, or a .npz with x and y.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to save the model (.keras).")
@click.option("--arch", default="mobilenet_v1", show_default=True, help="Architecture (see mobiledeploy.models.archs).")
@click.option("--alpha", default=0.25, show_default=True, type=float, help="Width multiplier.")
@click.option("--res", "resolution", default=32, show_default=True, type=int, help="Input resolution (pixels).")
@click.option("--epochs", default=60, show_default=True, type=int)
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--lr", "learning_rate", default=5e-3, show_default=True, type=float,
              help="Peak learning rate (cosine decay to 1% of it).")
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "nadam"]))
@click.option("--shift", default=0.1, show_default=True, type=float,
              help="Random translation, as a fraction of the image side.")
@click.option("--flip/--no-flip", default=None,
              help="Random horizontal flips (default: on, except for digits).")
@click.option("--val-fraction", default=0.2, show_default=True, type=float,
              help="Held-out fraction for the test accuracy (digits uses its fixed test split).")
@click.option("--preprocessing", default=None, help="Input preprocessing (default: the architecture's).")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False),
              help="Class names, one per line.")
@click.option("--init", type=click.Path(exists=True), help="Fine-tune this Keras model instead of a new one.")
@click.option("--limit", type=int, help="Train on a seeded subset of this many samples.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for init, shuffling and augmentation.")
@json_option
def train(json_path, **kwargs) -> None:
    """Train a MobileNet and report its accuracy on held-out data.

    \b
    Example (the committed reference model):
      mobiledeploy train --data digits --alpha 0.25 --res 32 --epochs 60 \\
          --out models/mobilenet_v1_0.25_32_digits.keras
    """
    from mobiledeploy.accuracy.train import TrainConfig, train as run_train

    cfg = TrainConfig(**kwargs)
    err = stderr_console()

    def progress(epoch, epochs, logs):
        err.print(f"epoch {epoch}/{epochs}: loss {logs['loss']:.4f}, accuracy {logs.get('accuracy', 0):.3f}")

    result = run_train(cfg, progress=progress)
    emit_json(json_path, result.to_json())
    if json_path == "-":
        return
    from mobiledeploy.units import format_size

    top5 = f", top-5 {result.test_top5:.2%}" if result.test_top5 is not None else ""
    stdout_console().print(
        f"saved {result.out} ({format_size(result.size_bytes)}): {result.arch} alpha {result.alpha} "
        f"res {result.resolution}, {result.classes} classes, preprocessing {result.preprocessing}\n"
        f"test top-1 {result.test_top1:.2%}{top5} on {result.test_samples} samples ({result.test_split}); "
        f"train top-1 {result.train_top1:.2%} on {result.train_samples}; {result.seconds:.0f} s")
