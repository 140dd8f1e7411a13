"""Inception-v3 FID features (Szegedy et al. 2016; the TF 2015-12-05 graph as ported by pytorch-fid), from a local file.

The architecture below mirrors torchvision's Inception3 with pytorch-fid's FID patches (average pools that ignore
padding, max pool in the last block), so `pt_inception-2015-12-05-6726825d.pth` loads with its own key names.
Nothing is downloaded: pass the path of that file.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gendiff.device import resolve_device
from gendiff.errors import DataError
from gendiff.io import torch_load_safe

from .metrics import frechet_distance


class BasicConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, **kw):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **kw)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg(x):
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, c: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(c, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c, pool_features, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(c, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, c: int, c7: int):
        super().__init__()
        k17, k71 = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = BasicConv2d(c, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **k17)
        self.branch7x7_3 = BasicConv2d(c7, 192, **k71)
        self.branch7x7dbl_1 = BasicConv2d(c, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **k71)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **k17)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **k71)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **k17)
        self.branch_pool = BasicConv2d(c, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, c: int, max_pool: bool):
        super().__init__()
        k13, k31 = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, **k13)
        self.branch3x3_2b = BasicConv2d(384, 384, **k31)
        self.branch3x3dbl_1 = BasicConv2d(c, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, **k13)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, **k31)
        self.branch_pool = BasicConv2d(c, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool)], 1)


class FIDInceptionV3(nn.Module):
    """Images in [0, 1] (B, 3, H, W) -> 2048-d pool3 features, resized bilinearly to 299x299 first (pytorch-fid)."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, max_pool=False), InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, kernel_size=3, stride=2)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def load_fid_inception(path: str | Path) -> FIDInceptionV3:
    """FIDInceptionV3 with weights from a pytorch-fid state-dict file (pt_inception-2015-12-05-6726825d.pth)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: Inception weights file not found; download pt_inception-2015-12-05-6726825d.pth "
                        "from the pytorch-fid releases and pass its path")
    state = torch_load_safe(path)
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise DataError(f"{path}: not a pytorch-fid Inception state dict (no 'Mixed_7c.branch_pool.conv.weight')")
    model = FIDInceptionV3()
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise DataError(f"{path}: Inception state dict does not match (missing {missing[:3]}, unexpected "
                        f"{result.unexpected_keys[:3]})")
    return model.eval().requires_grad_(False)


@torch.no_grad()
def inception_features(model: FIDInceptionV3, pixels: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """uint8 (N, C, H, W) images (grey ones repeated to RGB) -> (N, 2048) features."""
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(pixels), batch_size):
        x = pixels[i:i + batch_size].to(dev, torch.float32) / 255.0
        out.append(model(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).cpu())
    return torch.cat(out)


def inception_fid(weights: str | Path, generated: torch.Tensor, real: torch.Tensor, batch_size: int = 50,
                  device: str | torch.device = "cpu") -> float:
    """FID (Heusel et al. 2017) in Inception pool3 space between two uint8 image sets; the network runs on
    `device` (features come back to the CPU)."""
    model = load_fid_inception(weights).to(resolve_device(device))
    return frechet_distance(inception_features(model, generated, batch_size).double(),
                            inception_features(model, real, batch_size).double())
