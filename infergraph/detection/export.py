"""The shipped detector as an exported model file that returns boxes.

    python -m infergraph.detection.export detector.pt           # TorchScript
    python -m infergraph.detection.export detector.pt2 --export  # torch.export

The exported module maps a normalised ``N×3×120×160`` batch to ``N×K×6`` rows
``[x1, y1, x2, y2, score, class_id]`` in model-input pixels, best score first
(the *boxes* contract of ``infergraph.predictors.exported``): decoding is done
in tensor operations, so the file needs no Python from this project to run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from infergraph.detection.model import INPUT_H, INPUT_W, STRIDE, CentreNet

HERE = Path(__file__).parent
MAX_BOXES = 100


class BoxesModule(nn.Module):
    """CentreNet plus its peak decoding, with a fixed number of candidate boxes per image."""

    def __init__(self, net: CentreNet, max_boxes: int = MAX_BOXES) -> None:
        super().__init__()
        self.net = net
        self.max_boxes = max_boxes
        self.stride = float(STRIDE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heatmap, size, offset = self.net(x)
        heat = torch.sigmoid(heatmap)
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).float()
        batch, classes, h, w = peaks.shape
        scores, index = peaks.reshape(batch, classes * h * w).topk(self.max_boxes)
        cls = torch.div(index, h * w, rounding_mode="floor")
        cell = index - cls * (h * w)
        gy = torch.div(cell, w, rounding_mode="floor")
        gx = cell - gy * w
        at = cell.unsqueeze(1).expand(batch, 2, self.max_boxes)
        wh = torch.exp(size.reshape(batch, 2, h * w).gather(2, at)) * self.stride
        off = offset.reshape(batch, 2, h * w).gather(2, at)
        cx = (gx.float() + off[:, 0]) * self.stride
        cy = (gy.float() + off[:, 1]) * self.stride
        half_w, half_h = wh[:, 0] / 2, wh[:, 1] / 2
        return torch.stack(
            [cx - half_w, cy - half_h, cx + half_w, cy + half_h, scores, cls.float()], dim=-1
        )


def exportable(weights: Path = HERE / "weights.pt") -> BoxesModule:
    net = CentreNet()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return BoxesModule(net.eval()).eval()


def export(path: Path, program: bool = False, weights: Path = HERE / "weights.pt") -> Path:
    """Write the detector to ``path``: TorchScript, or a torch.export program (dynamic batch)."""
    module = exportable(weights)
    example = torch.zeros(2, 3, INPUT_H, INPUT_W)
    if program:
        shapes = {"x": {0: torch.export.Dim.DYNAMIC}}
        torch.export.save(torch.export.export(module, (example,), dynamic_shapes=shapes), path)
    else:
        torch.jit.save(torch.jit.script(module), path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="where to write the model file")
    parser.add_argument("--export", action="store_true", help="torch.export instead of TorchScript")
    args = parser.parse_args(argv)
    if not args.path.parent.is_dir():
        parser.error(f"{args.path.parent} is not a folder")
    export(args.path, program=args.export)
    print(
        f"wrote {args.path}; run it with infergraph.predictors.exported:ExportedModelPredictor "
        f'options {{"output": "boxes", "input_size": [{INPUT_H}, {INPUT_W}], '
        '"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], '
        f'"labels": "{HERE / "labels.txt"}"}}'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
