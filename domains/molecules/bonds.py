"""Bond orders from interatomic distances; atom/molecule stability as in Hoogeboom et al. 2022 (EDM, Table 2)."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from gendiff.errors import DataError

# Typical covalent bond lengths in picometres (literature averages: CRC Handbook of Chemistry and Physics,
# "Bond lengths in crystalline organic compounds", Allen et al. 1987, as tabulated e.g. by wiredchemist.com).
# One entry per unordered element pair; a missing pair has no bond of that order.
SINGLE_PM = {
    ("H", "H"): 74, ("H", "C"): 109, ("H", "N"): 101, ("H", "O"): 96, ("H", "F"): 92,
    ("C", "C"): 154, ("C", "N"): 147, ("C", "O"): 143, ("C", "F"): 135,
    ("N", "N"): 145, ("N", "O"): 140, ("N", "F"): 136,
    ("O", "O"): 148, ("O", "F"): 142,
    ("F", "F"): 142,
}
DOUBLE_PM = {
    ("C", "C"): 134, ("C", "N"): 129, ("C", "O"): 120,
    ("N", "N"): 125, ("N", "O"): 121,
    ("O", "O"): 121,
}
TRIPLE_PM = {("C", "C"): 120, ("C", "N"): 116, ("C", "O"): 113, ("N", "N"): 110}
# Tolerances added to each length (pm), the values EDM's bond_analyze.py uses for QM9.
MARGINS_PM = (10, 5, 3)
ALLOWED_VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}

_MAX_Z = 10
_SYMBOL_Z = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}


def threshold_tables(margins_pm: Sequence[float] = MARGINS_PM) -> np.ndarray:
    """(3, 10, 10) distance thresholds in angstrom indexed by [order-1, Z_i, Z_j]; 0 where no such bond exists."""
    tables = np.zeros((3, _MAX_Z, _MAX_Z))
    for k, (lengths, margin) in enumerate(zip((SINGLE_PM, DOUBLE_PM, TRIPLE_PM), margins_pm)):
        for (a, b), pm in lengths.items():
            za, zb = _SYMBOL_Z[a], _SYMBOL_Z[b]
            tables[k, za, zb] = tables[k, zb, za] = (pm + margin) / 100.0
    return tables


_TABLES = threshold_tables()
_VALENCE = np.full(_MAX_Z, -1, dtype=np.int64)
for _sym, _v in ALLOWED_VALENCE.items():
    _VALENCE[_SYMBOL_Z[_sym]] = _v


def _check_z(z: np.ndarray) -> None:
    if z.size and (z.min() < 0 or z.max() >= _MAX_Z or np.any(_VALENCE[z] < 0)):
        bad = sorted({int(v) for v in z.ravel() if not (0 <= v < _MAX_Z and _VALENCE[v] >= 0)})
        raise DataError(f"atomic number(s) {bad} have no bond-length table (vocabulary H, C, N, O, F)")


def bond_orders_from_distances(zi, zj, dist, tables: np.ndarray = _TABLES) -> np.ndarray:
    """Order 0-3 per pair: single if d < l1+m1, double if also d < l2+m2, triple if also d < l3+m3 (EDM rule)."""
    t1, t2, t3 = tables[0][zi, zj], tables[1][zi, zj], tables[2][zi, zj]
    b1 = dist < t1
    b2 = b1 & (dist < t2)
    b3 = b2 & (dist < t3)
    return b1.astype(np.int64) + b2 + b3


def _kekule_midpoints() -> np.ndarray:
    """(10, 10) midpoint of the single and double bond lengths (angstrom); 0 where no double bond exists."""
    mid = np.zeros((_MAX_Z, _MAX_Z))
    for (a, b), pm in DOUBLE_PM.items():
        za, zb = _SYMBOL_Z[a], _SYMBOL_Z[b]
        mid[za, zb] = mid[zb, za] = (pm + SINGLE_PM[(a, b)]) / 200.0
    return mid


_KEKULE_MID = _kekule_midpoints()


def kekulize_orders(z: np.ndarray, dist: np.ndarray, orders: np.ndarray) -> np.ndarray:
    """Opt-in Kekule assignment (not in EDM): raise single bonds shorter than the single/double midpoint to double
    along a maximum matching of atoms one bond short of their valence (aromatic rings such as benzene)."""
    import networkx as nx

    deficit = _VALENCE[z] - orders.sum(axis=1)
    cand = (orders == 1) & (dist < _KEKULE_MID[z[:, None], z[None, :]]) & (deficit[:, None] >= 1) & (deficit[None, :] >= 1)
    i, j = np.nonzero(np.triu(cand, 1))
    if len(i) == 0:
        return orders
    graph = nx.Graph()
    graph.add_edges_from(zip(i.tolist(), j.tolist()))
    orders = orders.copy()
    for a, b in nx.max_weight_matching(graph, maxcardinality=True):
        orders[a, b] += 1
        orders[b, a] += 1
    return orders


def bond_order_matrix(z, pos, tables: np.ndarray = _TABLES, kekulize: bool = False) -> np.ndarray:
    """(N, N) symmetric integer bond-order matrix of one molecule, vectorised over all pairs."""
    z = np.asarray(z, dtype=np.int64).reshape(-1)
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
    _check_z(z)
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    orders = bond_orders_from_distances(z[:, None], z[None, :], dist, tables)
    np.fill_diagonal(orders, 0)
    return kekulize_orders(z, dist, orders) if kekulize else orders


def bond_list(z, pos, tables: np.ndarray = _TABLES, kekulize: bool = False) -> list[tuple[int, int, int]]:
    """[(i, j, order)] with i < j for every bonded pair."""
    orders = bond_order_matrix(z, pos, tables, kekulize)
    i, j = np.nonzero(np.triu(orders, 1))
    return [(int(a), int(b), int(orders[a, b])) for a, b in zip(i, j)]


def atom_valences(z, pos, tables: np.ndarray = _TABLES, kekulize: bool = False) -> np.ndarray:
    """Sum of bond orders per atom."""
    return bond_order_matrix(z, pos, tables, kekulize).sum(axis=1)


def atom_stable(z, pos, tables: np.ndarray = _TABLES, kekulize: bool = False) -> np.ndarray:
    """Bool per atom: its bond-order sum equals the allowed valence (H 1, C 4, N 3, O 2, F 1)."""
    z = np.asarray(z, dtype=np.int64).reshape(-1)
    return atom_valences(z, pos, tables, kekulize) == _VALENCE[z]


def _padded_chunk(mols: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_max = max((len(z) for z, _ in mols), default=0)
    zs = np.zeros((len(mols), n_max), dtype=np.int64)
    ps = np.zeros((len(mols), n_max, 3))
    valid = np.zeros((len(mols), n_max), dtype=bool)
    for b, (z, p) in enumerate(mols):
        zs[b, : len(z)], ps[b, : len(z)], valid[b, : len(z)] = z, p, True
    return zs, ps, valid


def stability_counts(mols: Iterable[tuple], tables: np.ndarray = _TABLES, chunk: int = 1024,
                     kekulize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per molecule (stable atoms, atoms), batched over padded chunks of molecules for speed."""
    mols = [(np.asarray(z, dtype=np.int64).reshape(-1), np.asarray(p, dtype=np.float64).reshape(-1, 3)) for z, p in mols]
    stable, total = np.zeros(len(mols), dtype=np.int64), np.zeros(len(mols), dtype=np.int64)
    for s in range(0, len(mols), chunk):
        part = mols[s : s + chunk]
        zs, ps, valid = _padded_chunk(part)
        _check_z(zs[valid])
        dist = np.linalg.norm(ps[:, :, None, :] - ps[:, None, :, :], axis=-1)
        orders = bond_orders_from_distances(zs[:, :, None], zs[:, None, :], dist, tables)
        pair_ok = valid[:, :, None] & valid[:, None, :] & ~np.eye(zs.shape[1], dtype=bool)[None]
        valence = np.where(pair_ok, orders, 0).sum(axis=2)
        ok = (valence == _VALENCE[zs]) & valid
        stable[s : s + len(part)] = ok.sum(axis=1)
        total[s : s + len(part)] = valid.sum(axis=1)
    if kekulize:
        for k in np.nonzero(stable < total)[0]:
            stable[k] = atom_stable(*mols[k], tables, kekulize=True).sum()
    return stable, total


def stability(mols: Iterable[tuple], tables: np.ndarray = _TABLES, kekulize: bool = False) -> dict:
    """Atom stability (fraction of stable atoms over all atoms) and molecule stability (all atoms stable)."""
    stable, total = stability_counts(mols, tables, kekulize=kekulize)
    n_atoms = int(total.sum())
    return {
        "atom_stability": float(stable.sum() / n_atoms) if n_atoms else 0.0,
        "molecule_stability": float(np.mean(stable == total)) if len(total) else 0.0,
        "molecule_stable": stable == total,
    }
