"""The property classifier of EDM's conditional QM9 protocol: an EGNN regressor on positions and atom types
predicting one QM9 property, trained on EDM's first half of the train split; its MAE on real molecules is the
protocol's lower bound, its MAE on a conditional run's samples against their targets the score. (Named classifier as
EDM names it; properties.py holds the data side.) A minimal version: train, predict and MAE, no run folder."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gendiff.errors import ConfigError

from .data import QM9Dataset
from .egnn import EGNN
from .model import FEATURE_DIM, encode
from .properties import PROPERTIES, check_properties, normalise, normaliser, property_values, qm9_half


class PropertyRegressor(nn.Module):
    """EGNN (no time input) -> per-node invariant features -> sum over each molecule's atoms -> MLP -> one scalar
    per molecule (the normalised property). Invariant to rotations, translations and atom order."""

    def __init__(self, hidden_nf: int = 128, n_layers: int = 7):
        super().__init__()
        self.egnn = EGNN(in_node_nf=FEATURE_DIM, hidden_nf=hidden_nf, n_layers=n_layers, condition_time=False)
        self.egnn.embedding_out = nn.Linear(hidden_nf, hidden_nf)  # keep the hidden features, not 6 channels
        self.head = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, 1))

    def forward(self, batch) -> torch.Tensor:
        device = next(self.parameters()).device
        x, vec = encode(batch, device)
        t = torch.zeros(x.shape[0], device=device)
        h = self.egnn(x, t, mask=vec)[:, 3:]
        pooled = torch.zeros(int(vec.max()) + 1, h.shape[1], device=device, dtype=h.dtype).index_add_(0, vec, h)
        return self.head(pooled).squeeze(-1)


def train_classifier(prop: str = "alpha", half: str | None = "first", limit: int | None = None, *,
                     steps: int = 1000, batch_size: int = 96, lr: float = 1e-3, hidden: int = 128, layers: int = 7,
                     seed: int = 0, device: str = "cpu", progress: bool = False) -> dict:
    """Train a PropertyRegressor on `prop` over EDM's `half` of QM9's train split (its first `limit` molecules) with
    an L1 loss on the normalised property (EDM's classifier: L1, mean / MAD) -> {'model', 'property', 'mean', 'mad',
    'unit', 'steps'}. Short runs only here; the protocol's classifier trains for hours."""
    (name,) = check_properties([prop])
    ds = qm9_half(half)
    n = min(int(limit), len(ds)) if limit else len(ds)
    values = property_values(ds, [name])[:n]
    norm = normaliser(values, [name])
    target = normalise(values, [name], norm)[:, 0]
    torch.manual_seed(int(seed))
    model = PropertyRegressor(hidden, layers).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(int(seed))
    model.train()
    for step in range(int(steps)):
        pick = torch.randint(n, (min(int(batch_size), n),), generator=gen)
        batch = QM9Dataset.collate_fn([ds[int(i)] for i in pick])
        loss = (model(batch) - target[pick].to(device)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress and step % 100 == 0:
            print(f"classifier {name} step {step}: L1 (normalised) {loss.item():.4f}")
    model.eval()
    return {"model": model, "property": name, "mean": norm["mean"][name], "mad": norm["mad"][name],
            "unit": PROPERTIES[name][2], "steps": int(steps)}


@torch.no_grad()
def predict(clf: dict, mols, batch_size: int = 256) -> np.ndarray:
    """The classifier's property (in its unit) for each molecule of `mols` (Data records: pos, x, charge)."""
    mols = list(mols)
    if not mols:
        raise ConfigError("predict needs at least one molecule")
    out = []
    for i in range(0, len(mols), int(batch_size)):
        out.append(clf["model"](QM9Dataset.collate_fn(mols[i:i + int(batch_size)])).float().cpu())
    return torch.cat(out).numpy().astype(np.float64) * clf["mad"] + clf["mean"]


def mae(clf: dict, mols, targets=None) -> float:
    """Mean absolute error of the classifier on `mols` against `targets` (default: each molecule's own
    `condition[property]`, as conditional sampling sets it)."""
    mols = list(mols)
    if targets is None:
        targets = [m.condition[clf["property"]] for m in mols]
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if targets.size != len(mols):
        raise ConfigError(f"{len(mols)} molecules but {targets.size} targets")
    return float(np.abs(predict(clf, mols) - targets).mean())


def real_mae(clf: dict, half: str | None = "second", limit: int | None = 1000) -> float:
    """The classifier's MAE on real QM9 molecules of `half` (EDM's lower bound: trained on the first half,
    measured on the second)."""
    ds = qm9_half(half)
    n = min(int(limit), len(ds)) if limit else len(ds)
    mols = [ds[i] for i in range(n)]
    return mae(clf, mols, property_values(ds, [clf["property"]])[:n, 0])
