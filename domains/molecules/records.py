"""The molecule record shared by the readers, the QM9 loader and the model: the element vocabulary and the
torch-geometric Data codec (pos, z, x one-hot, charge). Imports nothing of the domain, so data and io both build
on it."""
from __future__ import annotations

import numpy as np
import torch

from gendiff.errors import DataError

ELEMENTS = ("H", "C", "N", "O", "F")
ATOMIC_NUMBERS = (1, 6, 7, 8, 9)
SYMBOL_TO_Z = dict(zip(ELEMENTS, ATOMIC_NUMBERS))
Z_TO_SYMBOL = dict(zip(ATOMIC_NUMBERS, ELEMENTS))
_Z_TO_INDEX = np.full(128, -1, dtype=np.int64)
_Z_TO_INDEX[list(ATOMIC_NUMBERS)] = np.arange(len(ATOMIC_NUMBERS))


def element_index(z) -> np.ndarray:
    """Map atomic numbers to positions in ELEMENTS; -1 for anything outside the vocabulary."""
    z = np.asarray(z, dtype=np.int64)
    out = np.full(z.shape, -1, dtype=np.int64)
    ok = (z >= 0) & (z < len(_Z_TO_INDEX))
    out[ok] = _Z_TO_INDEX[z[ok]]
    return out


def molecule_to_data(z, pos, smiles: str | None = None):
    """Build the shared molecule record: pos (N,3) angstrom, z (N,), x one-hot over ELEMENTS, charge (N,1)."""
    from torch_geometric.data import Data

    z = torch.as_tensor(np.asarray(z), dtype=torch.long).reshape(-1)
    pos = torch.as_tensor(np.asarray(pos, dtype=np.float32)).reshape(-1, 3)
    if pos.shape[0] != z.shape[0]:
        raise DataError(f"molecule has {z.shape[0]} atomic numbers but {pos.shape[0]} positions")
    idx = torch.as_tensor(element_index(z.numpy()))
    if (idx < 0).any():
        bad = sorted(set(z[idx < 0].tolist()))
        raise DataError(f"atomic number(s) {bad} outside the vocabulary {ELEMENTS}")
    x = torch.nn.functional.one_hot(idx, len(ELEMENTS)).to(torch.float32)
    data = Data(pos=pos, z=z, x=x, charge=z.to(torch.float32).unsqueeze(1), num_nodes=int(z.shape[0]))
    if smiles is not None:
        data.smiles = smiles
    return data


def carried_bonds(mol) -> list[tuple[int, int, int]] | None:
    """[(i, j, order)] (i < j) of the bonds a molecule carries as `bond_index` (2, B) / `bond_order` (B,): an
    explicit-bond run's generated bonds, or an SDF's bond block read with io.read_sdf(keep_bonds=True); None when it
    carries none (its bonds are then inferred from distances)."""
    get = mol.get if isinstance(mol, dict) else lambda key: getattr(mol, key, None)
    index, order = get("bond_index"), get("bond_order")
    if index is None or order is None:
        return None
    index = np.asarray(index.detach().cpu() if hasattr(index, "detach") else index, dtype=np.int64).reshape(2, -1)
    order = np.asarray(order.detach().cpu() if hasattr(order, "detach") else order, dtype=np.int64).reshape(-1)
    return [(int(min(a, b)), int(max(a, b)), int(o)) for a, b, o in zip(index[0], index[1], order, strict=True)]
