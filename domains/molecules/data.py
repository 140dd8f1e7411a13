"""QM9 (Ramakrishnan et al. 2014) from the qm9pack CSVs, cached as one compact .npz; molecule files through io.

The element vocabulary and the molecule <-> Data codec live in records (re-exported here)."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from gendiff.errors import DataError
from gendiff.io import write_npz_atomic

from .io import read_molecules
from .records import (ATOMIC_NUMBERS, ELEMENTS, SYMBOL_TO_Z, Z_TO_SYMBOL, element_index,  # noqa: F401 (re-exported)
                      molecule_to_data)

QM9_SIZE = 130_831
QM9_SPLIT_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}
SPLIT_SEED = 0
CACHE_VERSION = 1
_CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
_MEMO: dict[str, dict] = {}


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: the argument, else $GENDIFF_CACHE, else ~/.cache/gendiff."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("GENDIFF_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gendiff"


def qm9_source_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder holding qm9_part1..3.csv: `root`, else the data folder shipped inside the qm9pack package."""
    if root is None:
        spec = importlib.util.find_spec("qm9pack")
        if spec is None or not spec.submodule_search_locations:
            raise DataError("QM9 needs the qm9pack package (pip install qm9pack); it ships the data")
        root = Path(spec.submodule_search_locations[0]) / "data"
    root = Path(root)
    missing = [f for f in _CSV_FILES if not (root / f).is_file()]
    if missing:
        raise DataError(f"{root}: missing QM9 file(s) {', '.join(missing)}")
    return root


def _source_fingerprint(root: Path) -> list:
    return [[f, (root / f).stat().st_size, int((root / f).stat().st_mtime)] for f in _CSV_FILES]


def _parse_csv(path: Path) -> dict:
    """Parse one qm9pack CSV: vectorised split of the coordinate and element strings, no per-row eval."""
    import pandas as pd

    cols = ["Index", "SMILES", "N_atoms", "Elements", "XYZ_Ang"]
    try:
        df = pd.read_csv(path, usecols=cols)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read QM9 CSV ({exc})") from None
    n_atoms = df["N_atoms"].to_numpy(np.int64)
    elem_text = ",".join(df["Elements"].astype(str)).replace("[", "").replace("]", "").replace("'", "")
    symbols = np.array(elem_text.split(","))
    xyz_text = ",".join(df["XYZ_Ang"].astype(str)).replace("[", "").replace("]", "")
    pos = np.array(xyz_text.split(","), dtype=np.float64)
    if symbols.size != n_atoms.sum() or pos.size != 3 * n_atoms.sum():
        raise DataError(f"{path}: N_atoms column disagrees with the Elements/XYZ_Ang columns")
    lookup = SYMBOL_TO_Z
    uniq, inv = np.unique(symbols, return_inverse=True)
    bad = [u for u in uniq if u not in lookup]
    if bad:
        raise DataError(f"{path}: element(s) {bad} outside the vocabulary {ELEMENTS}")
    z = np.array([lookup[u] for u in uniq], dtype=np.uint8)[inv]
    return {"index": df["Index"].to_numpy(np.int64), "smiles": df["SMILES"].astype(str).tolist(),
            "n_atoms": n_atoms, "z": z, "pos": pos.reshape(-1, 3).astype(np.float32)}


def _checksum(arrays: dict) -> str:
    h = hashlib.sha256()
    for key in ("pos", "z", "offsets", "index", "smiles"):
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def build_qm9_cache(root: str | os.PathLike | None = None, cache_dir=None) -> Path:
    """Convert the qm9pack CSVs once into `qm9-v<version>-<source hash>.npz` (written atomically)."""
    from tqdm import tqdm

    src = qm9_source_dir(root)
    parts = [_parse_csv(src / f) for f in tqdm(_CSV_FILES, desc="QM9 CSV -> cache", leave=False)]
    n_atoms = np.concatenate([p["n_atoms"] for p in parts])
    order = np.argsort(np.concatenate([p["index"] for p in parts]), kind="stable")
    pos = np.concatenate([p["pos"] for p in parts])
    z = np.concatenate([p["z"] for p in parts])
    smiles = [s for p in parts for s in p["smiles"]]
    starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    if not np.all(order == np.arange(len(order))):  # keep molecules in QM9 index order
        gather = np.concatenate([np.arange(starts[i], starts[i] + n_atoms[i]) for i in order])
        pos, z, n_atoms, smiles = pos[gather], z[gather], n_atoms[order], [smiles[i] for i in order]
    index = np.sort(np.concatenate([p["index"] for p in parts]))
    arrays = {"pos": pos, "z": z, "offsets": np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64),
              "index": index.astype(np.int64), "smiles": np.frombuffer("\n".join(smiles).encode(), dtype=np.uint8)}
    meta = {"version": CACHE_VERSION, "n_molecules": int(len(n_atoms)), "n_atoms": int(n_atoms.sum()),
            "sha256": _checksum(arrays), "source": _source_fingerprint(src)}
    path = _cache_path(src, cache_dir)
    write_npz_atomic(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def _cache_path(src: Path, cache_dir) -> Path:
    tag = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:10]
    return default_cache_dir(cache_dir) / f"qm9-v{CACHE_VERSION}-{tag}.npz"


def _read_cache(path: Path, src: Path) -> dict | None:
    """Load and verify a cache file; None when it is missing, stale or corrupt (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            arrays = {k: f[k] for k in ("pos", "z", "offsets", "index", "smiles")}
    except Exception:
        return None
    offsets = arrays["offsets"]
    ok = (meta.get("version") == CACHE_VERSION and meta.get("source") == _source_fingerprint(src)
          and len(offsets) == meta.get("n_molecules", -1) + 1 and int(offsets[-1]) == meta.get("n_atoms")
          and arrays["pos"].shape == (meta["n_atoms"], 3) and arrays["z"].shape == (meta["n_atoms"],)
          and meta.get("sha256") == _checksum(arrays))
    if not ok:
        return None
    arrays["smiles"] = arrays["smiles"].tobytes().decode().split("\n")
    if len(arrays["smiles"]) != meta["n_molecules"]:
        return None
    return arrays


def load_qm9_arrays(root=None, cache_dir=None) -> dict:
    """The whole QM9 set as flat arrays (pos, z, offsets, index, smiles); built once, then memoised and cached."""
    src = qm9_source_dir(root)
    path = _cache_path(src, cache_dir)
    key = str(path)
    if key not in _MEMO:
        arrays = _read_cache(path, src)
        if arrays is None:
            build_qm9_cache(src, cache_dir)
            arrays = _read_cache(path, src)
            if arrays is None:
                raise DataError(f"{path}: QM9 cache failed verification right after it was written")
        _MEMO[key] = arrays
    return _MEMO[key]


def split_sizes(n: int) -> dict:
    """EDM/Cormorant split: 100,000 / 17,748 / 13,083 for full QM9; the same proportions otherwise."""
    if n == QM9_SIZE:
        return dict(QM9_SPLIT_SIZES)
    test = int(0.1 * n)
    valid = int(round(n * QM9_SPLIT_SIZES["valid"] / QM9_SIZE))
    return {"train": n - valid - test, "valid": valid, "test": test}


def split_indices(split: str, n: int = QM9_SIZE, seed: int = SPLIT_SEED) -> np.ndarray:
    """Molecule indices of a split: a fixed-seed permutation cut train | valid | test (Cormorant recipe)."""
    if split == "all":
        return np.arange(n)
    sizes = split_sizes(n)
    if split not in sizes:
        raise DataError(f"split={split!r}: expected one of train, valid, test, all")
    perm = np.random.RandomState(seed).permutation(n)
    start = {"train": 0, "valid": sizes["train"], "test": sizes["train"] + sizes["valid"]}[split]
    return np.sort(perm[start:start + sizes[split]])


class QM9Dataset(torch.utils.data.Dataset):
    """Map-style QM9 split; item i is a torch_geometric Data (pos, z, x, charge, smiles)."""

    def __init__(self, arrays: dict, indices: np.ndarray, split: str):
        self.arrays, self.indices, self.split = arrays, np.asarray(indices, dtype=np.int64), split
        offsets = arrays["offsets"]
        self.num_atoms = (offsets[1:] - offsets[:-1])[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def _span(self, i: int) -> slice:
        if not -len(self) <= i < len(self):
            raise IndexError(f"QM9 {self.split} index {i} out of range ({len(self)} molecules)")
        j = self.indices[i]
        return slice(int(self.arrays["offsets"][j]), int(self.arrays["offsets"][j + 1]))

    def atoms(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(atomic numbers (N,) int64, positions (N,3) float32) of molecule i, without building a Data."""
        s = self._span(i)
        return self.arrays["z"][s].astype(np.int64), self.arrays["pos"][s]

    def smiles(self, i: int) -> str:
        return self.arrays["smiles"][self.indices[i]]

    def __getitem__(self, i: int):
        z, pos = self.atoms(int(i))
        return molecule_to_data(z, pos, smiles=self.smiles(int(i)))

    @staticmethod
    def collate_fn(items: Sequence):
        from torch_geometric.data import Batch

        return Batch.from_data_list(list(items))


def load_qm9(root=None, split: str = "train", cache_dir=None) -> QM9Dataset:
    """QM9 split from qm9pack (130,831 molecules, H C N O F, <= 29 atoms, angstrom); cached after the first call."""
    t0 = time.time()
    arrays = load_qm9_arrays(root, cache_dir)
    ds = QM9Dataset(arrays, split_indices(split, len(arrays["offsets"]) - 1), split)
    ds.load_seconds = time.time() - t0
    return ds


def qm9_atom_count_histogram(split: str = "train", root=None, cache_dir=None) -> dict[int, int]:
    """{number of atoms: number of molecules} over a QM9 split (EDM samples N from this)."""
    counts = np.bincount(load_qm9(root, split, cache_dir).num_atoms)
    return {int(n): int(c) for n, c in enumerate(counts) if c > 0}


def formula_counts(ds: QM9Dataset) -> np.ndarray:
    """(molecules, len(ELEMENTS)) int64: atoms of each element per molecule of a QM9 split, in ELEMENTS order."""
    offsets = ds.arrays["offsets"]
    idx = element_index(ds.arrays["z"])
    per_atom = np.zeros((len(idx), len(ELEMENTS)), dtype=np.int64)
    per_atom[np.arange(len(idx)), idx] = 1
    totals = np.add.reduceat(per_atom, offsets[:-1], axis=0)  # every QM9 molecule has >= 1 atom
    return totals[ds.indices]


def train_smiles(root=None, cache_dir=None) -> list[str]:
    """SMILES of the QM9 training split, as shipped (metrics canonicalise them before novelty)."""
    ds = load_qm9(root, "train", cache_dir)
    return [ds.arrays["smiles"][j] for j in ds.indices]


def load_molecules(path, keep_bonds: bool = False) -> list:
    """Read an .xyz or .sdf file into a list of Data records (see io.read_molecules; `keep_bonds`: an SDF's bond
    blocks as bond_index / bond_order)."""
    return read_molecules(path, keep_bonds)
