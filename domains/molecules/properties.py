"""QM9's molecular properties for property-conditioned generation (EDM's conditional QM9 protocol, Hoogeboom et al.
2022 Sec. 5.3): the six properties in EDM's units, read from the qm9pack CSVs (cached as one small .npz next to the
QM9 cache), EDM's split of the train split into two halves, and the mean / MAD normalisation of a property."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from gendiff.errors import ConfigError, DataError
from gendiff.io import write_npz_atomic

from .data import QM9Dataset, _CSV_FILES, _source_fingerprint, default_cache_dir, load_qm9, qm9_source_dir

HARTREE_MEV = 27211.4  # EDM converts Hartree to eV with 27.2114 and reports energies' MAE in meV
# name: (qm9pack column, factor to EDM's unit, unit)
PROPERTIES = {
    "alpha": ("Polarizability_bohr3", 1.0, "Bohr^3"),
    "gap": ("HOMO_LUMO_gap_au", HARTREE_MEV, "meV"),
    "homo": ("HOMO_au", HARTREE_MEV, "meV"),
    "lumo": ("LUMO_au", HARTREE_MEV, "meV"),
    "mu": ("Dipole_debye", 1.0, "D"),
    "Cv": ("Heatcapacity_Cv_cal_mol_K", 1.0, "cal/mol K"),
}
# EDM Table 3: MAE of the property classifier on EDM's conditional samples (and its own on real molecules, the
# lower bound 'QM9 second half'); beside which a conditional run's score is reported.
EDM_TABLE = {"alpha": 2.76, "gap": 655.0, "homo": 356.0, "lumo": 584.0, "mu": 1.111, "Cv": 1.101}
EDM_LOWER_BOUND = {"alpha": 0.10, "gap": 64.0, "homo": 39.0, "lumo": 36.0, "mu": 0.043, "Cv": 0.040}
EDM_HALF_SEED = 42
HALVES = ("first", "second")
PROPS_VERSION = 1
_MEMO: dict[str, dict] = {}


def check_properties(names) -> list[str]:
    """`names` (a list, or one comma-separated string) as a list of known property names; one ConfigError naming the
    first unknown one."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out = [str(n).strip() for n in names]
    for name in out:
        if name not in PROPERTIES:
            raise ConfigError(f"property {name!r}: expected one of {', '.join(PROPERTIES)}")
    if len(set(out)) != len(out):
        raise ConfigError(f"conditioning {out} names a property twice")
    if not out:
        raise ConfigError("conditioning names no property")
    return out


def _read_columns(src) -> dict:
    import pandas as pd

    cols = ["Index"] + [c for c, _, _ in PROPERTIES.values()]
    frames = []
    for name in _CSV_FILES:
        try:
            frames.append(pd.read_csv(src / name, usecols=cols))
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise DataError(f"{src / name}: cannot read the QM9 property columns ({exc})") from None
    df = pd.concat(frames).sort_values("Index", kind="stable")  # QM9 index order, as data.build_qm9_cache
    return {name: df[col].to_numpy(np.float64) * factor for name, (col, factor, _) in PROPERTIES.items()}


def load_qm9_properties(root=None, cache_dir=None) -> dict[str, np.ndarray]:
    """{property: (130,831,) float64 in EDM's unit} over all of QM9 in index order (the order of data.load_qm9's
    arrays); read from the CSVs once, then from `qm9props-v<version>-<tag>.npz` in the cache folder."""
    src = qm9_source_dir(root)
    tag = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:10]
    path = default_cache_dir(cache_dir) / f"qm9props-v{PROPS_VERSION}-{tag}.npz"
    key = str(path)
    if key in _MEMO:
        return _MEMO[key]
    meta = {"version": PROPS_VERSION, "source": _source_fingerprint(src)}
    arrays = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                if json.loads(str(f["meta"])) == meta:
                    arrays = {k: f[k] for k in PROPERTIES}
        except Exception:
            arrays = None
    if arrays is None:
        arrays = _read_columns(src)
        write_npz_atomic(path, meta=np.array(json.dumps(meta)), **arrays)
    _MEMO[key] = arrays
    return arrays


def edm_halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into QM9's train split, molecules in index order) of EDM's two halves.

    Matched to EDM's qm9/data/utils.py (initialize_datasets, datasets 'qm9_first_half' / 'qm9_second_half'): a
    permutation of the train split's positions drawn with numpy seed 42; the first half is its first n // 2 entries,
    the second half the rest, each in permutation order. EDM's train split holds the molecules in GDB9 index order
    (its process_xyz_files filters the archive's files by membership), which is load_qm9's order; that the archive
    lists its files in index order is assumed, not checked here."""
    perm = np.random.RandomState(EDM_HALF_SEED).permutation(int(n))
    return perm[: int(n) // 2], perm[int(n) // 2:]


def qm9_half(half: str | None, root=None, cache_dir=None) -> QM9Dataset:
    """QM9's train split (`half` None) or EDM's 'first' (the property classifier's) or 'second' (the conditional
    generator's) half of it, as a QM9Dataset."""
    ds = load_qm9(root, "train", cache_dir)
    if half is None:
        return ds
    if half not in HALVES:
        raise ConfigError(f"half {half!r}: expected one of {', '.join(HALVES)}")
    pos = edm_halves(len(ds))[HALVES.index(half)]
    return QM9Dataset(ds.arrays, ds.indices[pos], f"train-{half}-half")


def property_values(ds: QM9Dataset, names, root=None, cache_dir=None) -> np.ndarray:
    """(len(ds), len(names)) float64: the properties of a QM9 dataset's molecules, in EDM's units."""
    props = load_qm9_properties(root, cache_dir)
    return np.stack([props[name][ds.indices] for name in check_properties(names)], axis=1)


def normaliser(values: np.ndarray, names) -> dict:
    """EDM's normalisation of each property (qm9/utils.py compute_mean_mad): mean and mean absolute deviation from
    the mean, over `values` (molecules, properties). EDM took them from the valid split when training on the second
    half; here they are the training molecules'."""
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    mean = values.mean(0)
    mad = np.abs(values - mean).mean(0)
    if values.shape[0] < 2 or (mad <= 0).any():
        raise DataError(f"cannot normalise {list(names)} over {values.shape[0]} molecules (zero spread)")
    return {"mean": {n: float(m) for n, m in zip(names, mean)}, "mad": {n: float(d) for n, d in zip(names, mad)}}


def normalise(values, names, norm: dict) -> torch.Tensor:
    """(value - mean) / MAD per property -> float32 tensor (molecules, properties)."""
    values = torch.as_tensor(np.asarray(values, dtype=np.float64)).reshape(-1, len(names))
    mean = torch.tensor([norm["mean"][n] for n in names], dtype=torch.float64)
    mad = torch.tensor([norm["mad"][n] for n in names], dtype=torch.float64)
    return ((values - mean) / mad).float()


class ConditionedDataset(torch.utils.data.Dataset):
    """A dataset of molecules whose item i also carries `context` (1, properties): molecule i's normalised
    properties (batched by torch-geometric into one row per molecule)."""

    def __init__(self, base, context: torch.Tensor):
        if len(base) != context.shape[0]:
            raise DataError(f"{len(base)} molecules but {context.shape[0]} property rows")
        self.base, self.context = base, context.float()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        data = self.base[int(i)]
        data.context = self.context[int(i)].unsqueeze(0)
        return data
