"""Scores of the bonds molecules carry (an explicit-bond run's generated bonds), reported beside EDM's
distance-inferred metrics, which stay the headline.

Stability under strict neutral valences: an atom is stable when the orders of its carried bonds sum to exactly H 1,
C 4, N 3, O 2, F 1 (bonds.ALLOWED_VALENCE; no formal charges, so a nitro group or a zwitterion is not stable). The
generated bonds are kekulized (bondstate.BOND_CLASSES has no aromatic class); an aromatic bond (order 4) that an
SDF's own bond block may carry counts 1.5. A molecule is stable when all its atoms are.

Validity: the molecule built with its carried bonds (metrics.build_rdkit_mol(bonds=...)) sanitizes in RDKit, built
as EDM builds its molecules (no explicit hydrogen counts, so RDKit may add implicit hydrogens to an under-bonded
atom: weaker than strict stability); `validity_generated_bonds` counts the largest sanitizable fragment (EDM's
convention), `connected_validity_generated_bonds` only a whole, connected molecule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gendiff.errors import DataError

from .bonds import ALLOWED_VALENCE
from .io import as_atoms
from .metrics import build_rdkit_mol, is_connected_valid, sanitized_fragment
from .records import Z_TO_SYMBOL, carried_bonds

GENERATED_BOND_KEYS = (
    "atom_stability_generated_bonds",
    "molecule_stability_generated_bonds",
    "validity_generated_bonds",
    "connected_validity_generated_bonds",
)
_ORDER_VALUE = {1: 1.0, 2: 2.0, 3: 3.0, 4: 1.5}  # 4: aromatic, only from files


def carried_valences(z, bonds) -> np.ndarray:
    """Sum of the carried bond orders per atom (float: an aromatic bond counts 1.5)."""
    z = np.asarray(z, dtype=np.int64).reshape(-1)
    val = np.zeros(len(z))
    for i, j, order in bonds:
        if order not in _ORDER_VALUE or not (0 <= i < len(z) and 0 <= j < len(z)) or i == j:
            raise DataError(
                f"bond ({i}, {j}, order {order}) of a {len(z)}-atom molecule: expected two different "
                "atoms and an order in 1-3 (or 4, aromatic)"
            )
        val[i] += _ORDER_VALUE[order]
        val[j] += _ORDER_VALUE[order]
    return val


def strictly_stable(z, bonds) -> np.ndarray:
    """Bool per atom: its carried bond orders sum to its neutral valence (module docstring)."""
    z = np.asarray(z, dtype=np.int64).reshape(-1)
    unknown = sorted({int(a) for a in z if int(a) not in Z_TO_SYMBOL})
    if unknown:
        raise DataError(f"atomic number(s) {unknown} outside the vocabulary H, C, N, O, F")
    want = np.array([ALLOWED_VALENCE[Z_TO_SYMBOL[int(a)]] for a in z], dtype=np.float64)
    return np.abs(carried_valences(z, bonds) - want) < 1e-6


def carries_bonds(mols: Sequence) -> bool:
    """Whether every molecule carries its own bonds (and there is at least one)."""
    return len(mols) > 0 and all(carried_bonds(m) is not None for m in mols)


def generated_bond_metrics(mols: Sequence) -> dict:
    """GENERATED_BOND_KEYS of molecules that all carry bonds (module docstring)."""
    from rdkit import rdBase

    mols = list(mols)
    if not carries_bonds(mols):
        raise DataError("generated-bond metrics need molecules that carry bonds (bond_index / bond_order)")
    stable_atoms = total_atoms = stable_mols = valid = connected = 0
    with rdBase.BlockLogs():
        for mol in mols:
            z, pos = as_atoms(mol)
            bonds = carried_bonds(mol)
            ok = strictly_stable(z, bonds)
            stable_atoms, total_atoms, stable_mols = (
                stable_atoms + int(ok.sum()),
                total_atoms + len(z),
                stable_mols + int(ok.all()),
            )
            rd = build_rdkit_mol(z, pos, conformer=False, bonds=bonds)
            valid += sanitized_fragment(rd) is not None
            connected += is_connected_valid(rd)
    n = len(mols)
    return dict(
        zip(
            GENERATED_BOND_KEYS,
            (stable_atoms / max(total_atoms, 1), stable_mols / n, valid / n, connected / n),
            strict=True,
        )
    )
