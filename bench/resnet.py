"""A ResNet-18 in plain torch (torchvision does not import beside this torch build).

Random weights: the benchmark needs its arithmetic, not its accuracy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from infergraph.predictors.base import ClassifierPredictor, RecordMeta

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.down(x))


class ResNet18(nn.Module):
    """11.7 M parameters, 1.8 GFLOPs per 224×224 image."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        self.layers = nn.Sequential(
            *[nn.Sequential(BasicBlock(a, b, s), BasicBlock(b, b, 1)) for a, b, s in widths]
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


class ResNet18Predictor(ClassifierPredictor):
    """ImageNet-style preprocessing (resize to 224, normalise) around a random ResNet-18."""

    def load(self) -> None:
        torch.manual_seed(0)
        self.model = ResNet18().to(self.device).eval()
        self.labels = [f"class-{i}" for i in range(1000)]

    def preprocess_input(self, record: np.ndarray, meta: RecordMeta) -> Any:
        image = Image.fromarray(record).resize((224, 224), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - MEAN) / STD
