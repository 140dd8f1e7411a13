"""Readers for the on-disk layouts of torchvision's MNIST, Fashion-MNIST and CIFAR-10, without needing torchvision."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from gendiff.errors import DataError

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format: magic 0x0000 | dtype | ndim, big-endian int32 dims, data); .gz allowed."""
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(f"{path}: IDX header says shape {shape} but the file holds {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write an IDX file (uint8 or int32 arrays); used by tests and to export data."""
    array = np.asarray(array)
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}.get(array.dtype)
    if code is None:
        raise DataError(f"{path}: write_idx supports uint8 and int32, got {array.dtype}")
    head = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">i4").tobytes()
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    Path(path).write_bytes(head + body)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def read_mnist_like(root: str | Path, name: str = "mnist", train: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """(images uint8 (N, 28, 28), labels int64) from root/<MNIST|FashionMNIST>/raw or root itself; None if absent."""
    root = Path(root)
    sub = TORCHVISION_FOLDERS[name]
    for folder in (root / sub / "raw", root / sub, root):
        img, lab = (_find(folder, f) for f in MNIST_FILES[train])
        if img and lab:
            images, labels = read_idx(img), read_idx(lab).astype(np.int64)
            if images.ndim != 3 or labels.shape != images.shape[:1]:
                raise DataError(f"{img}: images {images.shape} and labels {labels.shape} ({lab}) do not match")
            return images.astype(np.uint8), labels
    return None


def read_cifar10(root: str | Path, train: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """(images uint8 (N, 3, 32, 32), labels) from the CIFAR-10 python pickle batches in root[/cifar-10-batches-py]."""
    root = Path(root)
    folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    if not all((folder / n).is_file() for n in names):
        return None
    images, labels = [], []
    for n in names:
        try:
            with open(folder / n, "rb") as fh:
                batch = pickle.load(fh, encoding="latin1")
            data, lab = np.asarray(batch["data"], dtype=np.uint8), np.asarray(batch["labels"], dtype=np.int64)
        except Exception as exc:
            raise DataError(f"{folder / n}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
        if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
            raise DataError(f"{folder / n}: expected data (N, 3072) and N labels, got {data.shape} and {len(lab)}")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def write_cifar10_batch(path: str | Path, images: np.ndarray, labels) -> None:
    """Write one CIFAR-10 python batch (dict with 'data' (N, 3072) uint8 and 'labels'); used by tests."""
    batch = {"batch_label": Path(path).name, "data": np.asarray(images, dtype=np.uint8).reshape(len(images), -1),
             "labels": [int(v) for v in labels], "filenames": [f"{i}.png" for i in range(len(images))]}
    with open(path, "wb") as fh:
        pickle.dump(batch, fh)


def load_standard(name: str, root: str | Path, train: bool = True, download: bool = False):
    """MNIST / Fashion-MNIST / CIFAR-10 as (uint8 NCHW, labels, classes); reads files directly, torchvision only to download."""
    name = name.lower().replace("_", "-")
    if name in ("fashionmnist", "fmnist"):
        name = "fashion-mnist"
    if name in ("cifar-10", "cifar"):
        name = "cifar10"
    if name not in ("mnist", "fashion-mnist", "cifar10"):
        raise DataError(f"unknown standard dataset {name!r}; choose mnist, fashion-mnist or cifar10")
    found = read_cifar10(root, train) if name == "cifar10" else read_mnist_like(root, name, train)
    if found is None:
        if not download:
            raise DataError(f"{root}: no {name} files found (expected torchvision's layout); pass download=True to fetch "
                            f"them with torchvision")
        _download_with_torchvision(name, root, train)
        found = read_cifar10(root, train) if name == "cifar10" else read_mnist_like(root, name, train)
        if found is None:
            raise DataError(f"{root}: torchvision download finished but the {name} files were not found")
    images, labels = found
    if images.ndim == 3:
        images = images[:, None]
    classes = CIFAR10_CLASSES if name == "cifar10" else FASHION_CLASSES if name == "fashion-mnist" else [str(i) for i in range(10)]
    return images, labels, list(classes)


def _download_with_torchvision(name: str, root: str | Path, train: bool) -> None:
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise DataError(f"downloading {name} needs torchvision, which is not installed (pip install 'gendiff[vision]'); "
                        f"or place the raw files under {root}") from None
    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    cls(str(root), train=train, download=True)
