"""Train the digits classifier and write its weights, labels and held-out sample images.

Run ``python -m infergraph.predictors.digits.train`` (about a minute on two CPU cores; needs
scikit-learn from the ``dev`` extra). Everything is seeded, so a rerun on the same
library versions reproduces the committed files.

The held-out digits are never seen in training; they are rendered as PNG files
(64–128 px, grey or RGB) with a ``manifest.csv`` of true labels, and are what
``python flows/inference.py`` classifies by default.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from infergraph.predictors.digits.model import DigitsNet, render_digit, to_model_input

HERE = Path(__file__).parent
SEED = 20261123


def rendered_batch(pixels: np.ndarray, rng: np.random.Generator, *, jitter: bool) -> torch.Tensor:
    """Render digits and preprocess them exactly as inference will."""
    return torch.stack(
        [
            to_model_input(np.asarray(render_digit(p, rng, jitter=jitter).convert("RGB")))
            for p in pixels
        ]
    )


def train(epochs: int, out_dir: Path) -> float:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    digits = load_digits()
    x_train, x_test, y_train, y_test, _, idx_test = train_test_split(
        digits.data,
        digits.target,
        np.arange(len(digits.target)),
        test_size=0.2,
        random_state=SEED % 2**32,
        stratify=digits.target,
    )
    model = DigitsNet()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=epochs * ((len(x_train) + 63) // 64)
    )
    loss_fn = nn.CrossEntropyLoss()
    targets = torch.as_tensor(y_train, dtype=torch.long)
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        inputs = rendered_batch(x_train, rng, jitter=True)
        order = torch.randperm(len(inputs))
        total = 0.0
        for start in range(0, len(order), 64):
            take = order[start : start + 64]
            optimiser.zero_grad()
            loss = loss_fn(model(inputs[take]), targets[take])
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss) * len(take)
        print(f"epoch {epoch + 1:2d}/{epochs}: loss {total / len(order):.4f}")

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / "weights.pt")
    (out_dir / "labels.txt").write_text("".join(f"{d}\n" for d in range(10)))

    samples = out_dir / "samples"
    samples.mkdir(exist_ok=True)
    for old in samples.glob("*.png"):
        old.unlink()
    sample_rng = np.random.default_rng(SEED + 1)
    rows = []
    for pixels, label, index in zip(x_test, y_test, idx_test, strict=True):
        name = f"digit_{index:04d}.png"
        render_digit(pixels, sample_rng, jitter=False).save(samples / name, optimize=True)
        rows.append({"file": name, "label": str(label), "image_id": f"digits-{index:04d}"})
    with open(samples / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "image_id"])
        writer.writeheader()
        writer.writerows(rows)

    model.eval()
    from PIL import Image

    with torch.inference_mode():
        held_out = torch.stack(
            [
                to_model_input(np.asarray(Image.open(samples / r["file"]).convert("RGB")))
                for r in rows
            ]
        )
        accuracy = float((model(held_out).argmax(1).numpy() == y_test).mean())
    print(
        f"trained in {time.perf_counter() - started:.1f}s; "
        f"held-out accuracy {accuracy:.4f} on {len(rows)} sample images"
    )
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    train(args.epochs, args.out)


if __name__ == "__main__":
    main()
