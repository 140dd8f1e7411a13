"""Sample-quality metrics: Frechet distance, KID, and a small CNN classifier giving features, accuracy and class entropy."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from gendiff.device import make_generator
from gendiff.errors import DataError
from gendiff.io import atomic_path


def frechet_distance(feats_a, feats_b) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussian fits (Heusel et al. 2017, Eq. 6)."""
    a, b = np.asarray(feats_a, dtype=np.float64), np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise DataError(f"frechet_distance needs two (N>=2, D) feature arrays, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False).reshape(a.shape[1], -1), np.cov(b, rowvar=False).reshape(b.shape[1], -1)
    return frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b)


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    """Tr((S_a S_b)^(1/2)) via the symmetric form S_a^(1/2) S_b S_a^(1/2), whose eigenvalues are real and >= 0."""
    w, v = np.linalg.eigh((cov_a + cov_a.T) / 2)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root_a @ cov_b @ root_a
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_covmean)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3, the KID kernel (Binkowski et al. 2018, Sec. 4)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 estimate (Gretton et al. 2012, Eq. 3) with the polynomial kernel."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kernel_inception_distance(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID: mean and std of unbiased MMD^2 over random subsets (Binkowski et al. 2018); one full-set pass if small."""
    a, b = np.asarray(feats_a, dtype=np.float64), np.asarray(feats_b, dtype=np.float64)
    if min(len(a), len(b)) < 2:
        raise DataError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    size = min(subset_size, len(a), len(b))
    if size == len(a) == len(b):
        return mmd2_unbiased(a, b), 0.0
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def class_entropy(predictions, num_classes: int) -> float:
    """Entropy (nats) of the histogram of predicted classes; log(num_classes) means every class equally often."""
    counts = np.bincount(np.asarray(predictions, dtype=np.int64), minlength=num_classes).astype(np.float64)
    p = counts / max(counts.sum(), 1.0)
    return float(-(p[p > 0] * np.log(p[p > 0])).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


class FeatureClassifier(nn.Module):
    """A small LeNet-style CNN; its penultimate layer is the feature space for FD and KID (as LeNet-FID for MNIST)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, feature_dim: int = 128,
                 image_size: int = 32):
        super().__init__()
        self.config = dict(in_channels=in_channels, num_classes=num_classes, width=width, feature_dim=feature_dim,
                           image_size=image_size)
        w, layers, c, size = width, [], in_channels, image_size
        while size > 4 or not layers:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            c, w = w, min(2 * w, 128)
            if size >= 8:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                break
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * c, feature_dim), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels, so the classifier judges shapes rather than exact positions."""
    pad = F.pad(x, (2, 2, 2, 2), value=-1.0)
    dx, dy = torch.randint(0, 5, (2,), generator=gen).tolist()
    return pad[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


def train_classifier(x: torch.Tensor, labels: torch.Tensor, num_classes: int, *, epochs: int = 12,
                     batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = False) -> FeatureClassifier:
    """Fit the feature classifier on real training images in [-1, 1] (AdamW, cosine decay, shift augmentation)."""
    if labels is None:
        raise DataError("the evaluation classifier needs labelled training images")
    gen = make_generator("cpu", seed)  # the classifier trains on the CPU, where its images are
    torch.manual_seed(seed)
    model = FeatureClassifier(x.shape[1], num_classes, image_size=min(x.shape[-2:]))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    bar = tqdm(total=steps, desc="classifier", disable=not progress, leave=False)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(_augment(x[idx], gen)), labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
    bar.close()
    return model.eval()


@torch.no_grad()
def classify(model: FeatureClassifier, x: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, D), predicted class (N,)) for images in [-1, 1]."""
    model.eval()
    feats, preds = [], []
    for i in range(0, len(x), batch_size):
        f = model.features(x[i:i + batch_size].float())
        feats.append(f)
        preds.append(model.head(f).argmax(-1))
    return torch.cat(feats), torch.cat(preds)


def save_classifier(model: FeatureClassifier, path: str | Path, fingerprint: str) -> None:
    """Write the classifier as safetensors (atomically), its config and data fingerprint in the metadata."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"config": json.dumps(model.config), "fingerprint": fingerprint})


def classifier_fingerprint(path: str | Path) -> str | None:
    """The data fingerprint a saved classifier was trained for (from its metadata), None if unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("fingerprint")
    except Exception:  # missing, truncated or not safetensors: a cache miss
        return None


def load_classifier(path: str | Path) -> FeatureClassifier:
    """A classifier saved by save_classifier (safetensors: nothing is unpickled)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            config = json.loads(f.metadata()["config"])
            state = {k: f.get_tensor(k) for k in f.keys()}
        model = FeatureClassifier(**config)
        model.load_state_dict(state)
    except Exception as exc:
        raise DataError(f"{path}: unreadable classifier ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    return model.eval()


def load_or_train_classifier(paths, x: torch.Tensor, labels: torch.Tensor, num_classes: int,
                             fingerprint: str, progress: bool = False, epochs: int = 12,
                             save_to=None) -> FeatureClassifier:
    """The first saved classifier among `paths` (a path or a list) that was trained on the same data (by
    fingerprint and epochs), else train one and save it to the first of `save_to` (default: `paths`) that can be
    written."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    save_to = paths if save_to is None else [Path(p) for p in save_to]
    key = f"{fingerprint}-{epochs}"
    for path in paths:
        if path.is_file() and classifier_fingerprint(path) == key:
            return load_classifier(path)
    model = train_classifier(x, labels, num_classes, epochs=epochs, progress=progress)
    for path in save_to:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_classifier(model, path, key)
            break
        except OSError:
            continue
    return model


def data_fingerprint(images: torch.Tensor, labels: torch.Tensor | None) -> str:
    h = hashlib.sha256(images.contiguous().numpy().tobytes())
    if labels is not None:
        h.update(labels.numpy().astype(np.int64).tobytes())
    return h.hexdigest()[:16]
