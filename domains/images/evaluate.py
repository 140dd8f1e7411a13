"""Evaluate a run: classifier-feature FD/KID against held-out images, conditional accuracy, mode coverage, bits/dim."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from gendiff.device import make_generator
from gendiff.errors import ConfigError
from gendiff.io import torch_save_atomic
from gendiff.losses import nll_bits_per_dim
from gendiff.runs import pretrained_dirs, resolve
from gendiff.spaces import EuclideanSpace

from .data import load_data, to_model
from .grid import save_grid
from .inception import inception_fid
from .metrics import (
    class_entropy,
    classify,
    data_fingerprint,
    frechet_distance,
    kernel_inception_distance,
    load_or_train_classifier,
)
from .model import model_device
from .run import load_run
from .sampling import sample

CLASSIFIER = "classifier.safetensors"


def cache_dir() -> Path:
    """Where classifiers of runs that cannot hold their own (shipped models) are cached: $GENDIFF_CACHE, else
    $XDG_CACHE_HOME/gendiff, else ~/.cache/gendiff."""
    if os.environ.get("GENDIFF_CACHE"):
        return Path(os.environ["GENDIFF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gendiff"


def classifier_paths(run_dir: Path, key: str) -> tuple[list[Path], list[Path]]:
    """(where to look, where to save) the held-out classifier of a run: its own folder, then the classifiers shipped
    beside the pretrained models (one trained on the same data split is the same classifier), then the user cache;
    a shipped model's folder is only read."""
    shipped = [p.resolve() for p in pretrained_dirs().values()]
    own = Path(run_dir).resolve() / CLASSIFIER
    cached = cache_dir() / f"images-classifier-{key}.safetensors"
    look = [own, *[p / CLASSIFIER for p in shipped if p / CLASSIFIER != own], cached]
    save = [cached] if own.parent in shipped else [own, cached]
    return look, save


def run_classifier(run: Path, meta: dict, progress: bool = False, epochs: int = 12):
    """(classifier, train data, held-out test data): the CNN trained once on the run's real training images and
    cached (classifier_paths), so a run's FD / KID / accuracy are always read by the same classifier."""
    kw = dict(image_size=meta["image_size"], channels=meta["channels"], seed=meta["seed"],
              test_fraction=meta["test_fraction"])
    train, test = load_data(meta["data"], "train", **kw), load_data(meta["data"], "test", **kw)
    if train.labels is None:
        raise ConfigError(f"{meta['data']}: the feature classifier needs class labels (use class sub-folders)")
    fingerprint = data_fingerprint(train.images, train.labels)
    look, save = classifier_paths(run, f"{fingerprint}-{epochs}")
    clf = load_or_train_classifier(look, to_model(train.images), train.labels, len(train.classes), fingerprint,
                                   progress=progress, epochs=epochs, save_to=save)
    return clf, train, test


def real_reference(clf, train, test, n: int, seed: int = 0) -> dict:
    """Reference FDs: two random halves of the held-out images, and n training vs n held-out images."""
    g = np.random.default_rng(seed)
    f_test, p_test = classify(clf, to_model(test.images))
    perm = g.permutation(len(test))
    half = len(test) // 2
    f_train, _ = classify(clf, to_model(train.images[torch.as_tensor(g.permutation(len(train))[:n])]))
    m = min(n, len(test))
    return {
        "classifier_test_accuracy": float((p_test == test.labels).float().mean()),
        "fd_real_halves": frechet_distance(f_test[perm[:half]], f_test[perm[half:2 * half]]),
        "fd_real_train_vs_test": frechet_distance(f_train[:m], f_test),
        "kid_real_train_vs_test": kernel_inception_distance(f_train[:m], f_test)[0],
        "real_halves_n": half,
    }


def cached_sample(run, n: int, cache: str | Path, *, seed: int = 0, batch_size: int = 250, labels=None,
                  **kw) -> torch.Tensor:
    """`sample` in batches that are each saved to `cache` as they finish and reused on a re-run, so a long
    evaluation (ancestral 1000 steps on CPU) can be stopped and resumed. Batch j draws its noise from seed
    `seed * 100003 + j`, so it does not depend on the batches before it; results therefore differ from one
    uncached `sample` call with the same seed. Files are keyed by sampler, steps, guidance, seed, n and batch."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    key = (f"{kw.get('sampler', 'ddim')}_{kw.get('steps', 50)}_g{kw.get('guidance', 1.0)}_s{seed}_n{n}"
           f"_b{batch_size}" + ("" if labels is None else "_cond"))
    chunks = []
    for j, i in enumerate(range(0, n, batch_size)):
        b = min(batch_size, n - i)
        path = cache / f"{key}_{j:04d}.pt"
        if path.is_file():
            chunk = torch.load(path, weights_only=True)
        else:
            lab = None if labels is None else labels[i:i + b]
            chunk = sample(run, b, seed=seed * 100003 + j, batch_size=b, labels=lab, **kw)
            torch_save_atomic(chunk, path)
        chunks.append(chunk)
    return torch.cat(chunks)


def evaluate(run: str | Path, n: int = 1000, sampler: str = "ddim", steps: int = 50, guidance: float = 3.0,
             seed: int = 0, *, unconditional_n: int | None = None, nll_n: int = 0, inception: str | None = None,
             batch_size: int = 250, device: str | torch.device = "auto", samples_png: str | Path | None = None,
             progress: bool = False, reference: bool = True, classifier_epochs: int = 12,
             compile: bool | str | dict = False, bf16: bool = False, cache: str | Path | None = None,
             **sampler_options) -> dict:
    """Metrics dict for a run (folder or `pretrained:NAME`): fd, kid, conditional_accuracy (class-conditional guided samples), class entropy of
    unconditional samples, optional bits/dim on `nll_n` held-out images and Inception FID from a local weights file.

    The U-Net (sampling, bits/dim) and Inception run on `device`; the small feature classifier is trained and
    run on the CPU, as its images are, so a run's cached classifier and its FD / KID do not depend on the device.
    `compile` / `bf16` are those of `sample`.
    `cache`: a folder where the conditional samples are saved batch by batch and reused (see `cached_sample`)."""
    t0 = time.perf_counter()
    denoiser, meta = load_run(run, device, compile)
    clf, train, test = run_classifier(resolve(run), meta, progress, classifier_epochs)
    k = len(train.classes)
    conditional = meta["model"]["num_classes"] is not None
    out = {"run": str(run), "data": meta["data"], "sampler": sampler, "steps": steps, "n": n, "seed": seed,
           "guidance": guidance if conditional else None, "held_out_n": len(test),
           "batch_seeds": cache is not None and conditional}
    f_test, _ = classify(clf, to_model(test.images))
    common = dict(sampler=sampler, steps=steps, seed=seed, batch_size=batch_size, progress=progress, bf16=bf16,
                  **sampler_options)
    if conditional:
        labels = torch.arange(n) % k
        if cache is not None:
            pix = cached_sample((denoiser, meta), n, cache, guidance=guidance, labels=labels, **common)
        else:
            pix = sample((denoiser, meta), n, guidance=guidance, labels=labels, **common)
        f_gen, pred = classify(clf, to_model(pix))
        out["conditional_accuracy"] = float((pred == labels).float().mean())
    else:
        pix = sample((denoiser, meta), n, **common)
        f_gen, pred = classify(clf, to_model(pix))
        out["conditional_accuracy"] = None
    out["fd"] = frechet_distance(f_gen, f_test)
    out["kid"], out["kid_std"] = kernel_inception_distance(f_gen, f_test, seed=seed)
    if samples_png is not None:
        order = torch.argsort(torch.arange(min(n, 10 * k)) % k, stable=True) if conditional else torch.arange(min(n, 100))
        save_grid(pix[order], samples_png, nrow=10, scale=2 if meta["image_size"] <= 32 else 1)
    un = n if unconditional_n is None else unconditional_n
    if un > 0:
        pix_u = sample((denoiser, meta), un, seed=seed + 1, **{k_: v for k_, v in common.items() if k_ != "seed"}) \
            if conditional else pix[:un]
        f_u, pred_u = classify(clf, to_model(pix_u))
        h = class_entropy(pred_u.numpy(), k)
        out.update(class_entropy=h, class_entropy_normalized=h / math.log(k), unconditional_n=un)
        if conditional:
            out["fd_unconditional"] = frechet_distance(f_u, f_test)
    if reference:
        out.update(real_reference(clf, train, test, n, seed))
    if nll_n > 0:
        out["nll_bits_per_dim"], out["nll_n"] = bits_per_dim(denoiser, test, nll_n, seed), min(nll_n, len(test))
    if inception is not None:
        out["inception_fid"] = inception_fid(inception, pix, test.images, batch_size=min(batch_size, 100),
                                             device=model_device(denoiser))
    out["seconds"] = time.perf_counter() - t0
    return out


@torch.no_grad()
def bits_per_dim(denoiser, test, n: int, seed: int = 0, batch_size: int = 50) -> float:
    """Mean negative log-likelihood bound in bits/dim (Ho et al. 2020, Sec. 4.2) via the core's variational bound."""
    dev = model_device(denoiser)
    x0 = to_model(test.images[:n]).to(dev)
    gen = make_generator(dev, seed)
    vals = [nll_bits_per_dim(denoiser, x0[i:i + batch_size], denoiser.schedule, EuclideanSpace(), generator=gen,
                             decoder="discretized")
            for i in range(0, len(x0), batch_size)]
    return float(torch.cat([torch.as_tensor(v).reshape(-1) for v in vals]).float().mean())
