"""The handwritten-digits network, and the rendering and preprocessing it was trained with.

Training and inference share :func:`to_model_input`, so a sample image goes through
exactly the steps the network saw while learning.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from infergraph.predictors.imaging import grey_image

INPUT_SIZE = 32


class DigitsNet(nn.Module):
    """A three-block CNN over a 32×32 grey image: ~90k parameters, ~360 KB of weights."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(1, 16), block(16, 32), block(32, 64))
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 64),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(64, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def to_model_input(rgb: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 → 1×32×32 float in [0, 1] with bright ink on a dark ground.

    Photographs and scans of digits are dark ink on light paper, the training
    digits the other way round: the border's brightness tells which one we have.
    Contrast is stretched so ink colour and lighting do not matter.
    """
    grey = grey_image(rgb).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    x = np.asarray(grey, dtype=np.float32) / 255.0
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    if border.mean() > 0.5:
        x = 1.0 - x
    low, high = float(x.min()), float(x.max())
    x = (x - low) / (high - low) if high - low > 1e-06 else np.zeros_like(x)
    return torch.from_numpy(x).unsqueeze(0)


def render_digit(pixels: np.ndarray, rng: np.random.Generator, *, jitter: bool) -> Image.Image:
    """Draw an 8×8 scikit-learn digit (values 0–16) as a scanned-looking image.

    Dark ink on light paper, 64–128 px square, grey or tinted RGB; ``jitter`` adds
    the shifts, scale changes and sensor noise used to augment training (the
    committed samples go without noise, which would triple their size).
    """
    size = int(rng.choice([64, 72, 80, 96, 112, 128]))
    shift = size // 16
    margin = size // 8 + (int(rng.integers(-shift, shift + 1)) if jitter else 0)
    inner = max(8, size - 2 * margin)
    ink = Image.fromarray((pixels.reshape(8, 8) / 16.0).astype(np.float32), mode="F")
    ink = np.asarray(ink.resize((inner, inner), Image.BILINEAR), dtype=np.float32).clip(0, 1)
    alpha = np.zeros((size, size), dtype=np.float32)
    dx = int(rng.integers(-shift, shift + 1)) if jitter else 0
    dy = int(rng.integers(-shift, shift + 1)) if jitter else 0
    top, left = (size - inner) // 2 + dy, (size - inner) // 2 + dx
    alpha[top : top + inner, left : left + inner] = ink
    rgb_mode = bool(rng.random() < 0.5)
    paper = rng.uniform(200, 255, size=3) if rgb_mode else np.full(3, rng.uniform(200, 255))
    pen = rng.uniform(0, 90, size=3) if rgb_mode else np.full(3, rng.uniform(0, 60))
    image = paper * (1 - alpha[..., None]) + pen * alpha[..., None]
    if jitter:
        image += rng.normal(0, 6, size=image.shape)
    out = Image.fromarray(image.clip(0, 255).astype(np.uint8), mode="RGB")
    return out if rgb_mode else out.convert("L")
