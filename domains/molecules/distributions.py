"""The size and composition priors of molecule sampling: p(N) and p(formula) from the training set's histograms
(EDM Sec. 3.4), drawn on the CPU or the generator's device."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gendiff.device import table_dtype
from gendiff.errors import ConfigError

from .records import ELEMENTS

NUM_TYPES = len(ELEMENTS)


class FormulaDistribution:
    """p(formula) from the training set's histogram of formulas (atoms per element, in ELEMENTS order): a size and
    a composition are drawn together, as EDM draws N alone (EDM Sec. 3.4)."""

    def __init__(self, histogram: dict):
        if not histogram:
            raise ConfigError("formula histogram is empty")
        rows, weights = [], []
        for key, count in sorted(histogram.items()):
            try:
                row = [int(v) for v in str(key).split(",")]
            except ValueError:
                raise ConfigError(
                    f"formula histogram key {key!r}: expected {NUM_TYPES} comma-separated counts"
                ) from None
            if len(row) != NUM_TYPES or min(row) < 0 or sum(row) < 1 or float(count) < 0:
                raise ConfigError(
                    f"formula histogram entry {key!r}: {count!r}: expected {NUM_TYPES} counts >= 0 "
                    f"(at least one atom) and a count >= 0"
                )
            rows.append(row)
            weights.append(float(count))
        if sum(weights) <= 0:
            raise ConfigError("formula histogram has no mass")
        self.histogram = {",".join(map(str, r)): w for r, w in zip(rows, weights, strict=True)}
        self.formulas = torch.tensor(rows, dtype=torch.long)
        self.probs = torch.tensor(weights, dtype=torch.float64) / sum(weights)

    @classmethod
    def from_counts(cls, counts) -> FormulaDistribution:
        """From an (M, NUM_TYPES) array of per-molecule atom counts."""
        counts = torch.as_tensor(counts, dtype=torch.long).reshape(-1, NUM_TYPES)
        uniq, freq = torch.unique(counts, dim=0, return_counts=True)
        return cls({",".join(map(str, r.tolist())): int(c) for r, c in zip(uniq, freq, strict=True)})

    @classmethod
    def from_molecules(cls, mols: Sequence) -> FormulaDistribution:
        return cls.from_counts(torch.stack([m.x.sum(0).round().long() for m in mols]))

    def sizes(self) -> AtomCountDistribution:
        """The atom-count distribution this formula histogram implies."""
        hist: dict = {}
        for row, w in zip(self.formulas.sum(1).tolist(), self.probs.tolist(), strict=True):
            hist[row] = hist.get(row, 0.0) + w
        return AtomCountDistribution(hist)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, NUM_TYPES) atom counts per element (a CPU LongTensor), drawn on the generator's device."""
        device = generator.device if generator is not None else torch.device("cpu")
        idx = torch.multinomial(
            self.probs.to(device, table_dtype(device)), int(n), replacement=True, generator=generator
        )
        return self.formulas[idx.cpu()]


class AtomCountDistribution:
    """p(N) from the training set's histogram of atom counts; molecule sizes are drawn from it (EDM Sec. 3.4)."""

    def __init__(self, histogram: dict):
        if not histogram:
            raise ConfigError("atom-count histogram is empty")
        items = sorted((int(k), float(v)) for k, v in histogram.items())
        if any(n < 1 or c < 0 for n, c in items) or sum(c for _, c in items) <= 0:
            raise ConfigError(f"atom-count histogram must map N >= 1 to counts >= 0, got {histogram}")
        self.histogram = {n: c for n, c in items}
        self.sizes = torch.tensor([n for n, _ in items], dtype=torch.long)
        self.probs = torch.tensor([c for _, c in items], dtype=torch.float64)
        self.probs = self.probs / self.probs.sum()

    @classmethod
    def from_molecules(cls, mols: Sequence) -> AtomCountDistribution:
        return cls.from_sizes([int(m.num_nodes) for m in mols])

    @classmethod
    def from_sizes(cls, sizes) -> AtomCountDistribution:
        counts = torch.bincount(torch.as_tensor(sizes, dtype=torch.long).reshape(-1))
        return cls({int(n): int(c) for n, c in enumerate(counts.tolist()) if c})

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n atom counts (a CPU LongTensor: host-side sizes that shape the batch), drawn on the generator's device."""
        device = generator.device if generator is not None else torch.device("cpu")
        probs = self.probs.to(device, table_dtype(device))
        idx = torch.multinomial(probs, int(n), replacement=True, generator=generator)
        return self.sizes[idx.cpu()]

    def log_prob(self, sizes: torch.Tensor) -> torch.Tensor:
        """log p(N) per entry of `sizes`, on the device of `sizes` (-inf outside the histogram)."""
        sizes = torch.as_tensor(sizes, dtype=torch.long)
        device = sizes.device
        dtype = table_dtype(device)
        table = torch.full((int(self.sizes.max()) + 1,), float("-inf"), dtype=dtype, device=device)
        table[self.sizes.to(device)] = self.probs.log().to(device, dtype)
        out = torch.full(sizes.shape, float("-inf"), dtype=dtype, device=device)
        ok = (sizes >= 0) & (sizes < table.numel())
        out[ok] = table[sizes[ok]]
        return out
