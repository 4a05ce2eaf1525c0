"""The detector: a small CNN with a centre heatmap, box-size and offset head (CenterNet-style).

Pictures are resized to 160×120 (the arm camera's 4:3); the heads run at stride 4.
Plain torch layers: this torch build has no usable torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUT_W, INPUT_H = 160, 120
STRIDE = 4
NUM_CLASSES = 2
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class CentreNet(nn.Module):
    """Backbone (strides 2–16), a two-step top-down neck to stride 4, three 1×1 heads."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv(3, 12, 2)
        self.s4 = nn.Sequential(conv(12, 24, 2), conv(24, 24))
        self.s8 = nn.Sequential(conv(24, 48, 2), conv(48, 48))
        self.s16 = nn.Sequential(conv(48, 64, 2), conv(64, 64))
        self.up16 = nn.Conv2d(64, 48, 1)
        self.up8 = nn.Conv2d(48, 24, 1)
        self.fuse = conv(24, 24)
        self.heatmap = nn.Conv2d(24, NUM_CLASSES, 1)
        self.size = nn.Conv2d(24, 2, 1)
        self.offset = nn.Conv2d(24, 2, 1)
        nn.init.constant_(self.heatmap.bias, -2.2)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f4 = self.s4(self.stem(x))
        f8 = self.s8(f4)
        return f4, f8, self.s16(f8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f4, f8, f16 = self.features(x)
        p8 = f8 + F.interpolate(self.up16(f16), size=f8.shape[-2:], mode="nearest")
        p4 = f4 + F.interpolate(self.up8(p8), size=f4.shape[-2:], mode="nearest")
        p4 = self.fuse(p4)
        return self.heatmap(p4), self.size(p4), self.offset(p4)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """A crop's embedding: every backbone stage average-pooled, concatenated, L2-normed.

        The shallow stage keeps colour, the deep one shape; both matter for sorting.
        """
        f4, f8, f16 = self.features(x)
        pooled = [f.mean(dim=(2, 3)) for f in (f4, f8, f16)]
        pooled = [F.normalize(p, dim=1) for p in pooled]
        return F.normalize(torch.cat(pooled, dim=1), dim=1)


def to_input(image: np.ndarray, width: int = INPUT_W, height: int = INPUT_H) -> torch.Tensor:
    """H×W×3 uint8 → normalised 3×height×width float tensor (stretched, not letterboxed)."""
    from PIL import Image

    if image.shape[1] != width or image.shape[0] != height:
        image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    return (tensor - MEAN) / STD


@dataclass(frozen=True, slots=True)
class Box:
    class_id: int
    score: float
    x1: float
    y1: float
    x2: float
    y2: float


def decode(
    heatmap: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    threshold: float = 0.3,
    max_boxes: int = 100,
) -> list[list[Box]]:
    """Peaks of the heatmap (3×3 max-pool suppression) → boxes in model-input pixels."""
    heat = torch.sigmoid(heatmap)
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    batch, classes, h, w = peaks.shape
    scores, index = peaks.view(batch, -1).topk(min(max_boxes, classes * h * w))
    out: list[list[Box]] = []
    for b in range(batch):
        boxes = []
        for score, flat in zip(scores[b].tolist(), index[b].tolist(), strict=True):
            if score < threshold:
                break
            cls, rest = divmod(flat, h * w)
            gy, gx = divmod(rest, w)
            bw, bh = torch.exp(size[b, :, gy, gx]).tolist()
            ox, oy = offset[b, :, gy, gx].tolist()
            cx, cy = (gx + ox) * STRIDE, (gy + oy) * STRIDE
            bw, bh = bw * STRIDE, bh * STRIDE
            boxes.append(Box(cls, score, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
        out.append(boxes)
    return out
