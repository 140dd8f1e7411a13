"""Molecule metrics of Hoogeboom et al. 2022 (EDM, Table 2): atom/molecule stability, RDKit validity, uniqueness, novelty."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from gendiff.errors import DataError
from gendiff.io import atomic_path, write_json_atomic

from .bonds import bond_list, stability
from .data import Z_TO_SYMBOL, default_cache_dir, load_qm9, train_smiles
from .io import as_atoms, read_molecules, write_sdf
from .records import carried_bonds

__all__ = ["BOND_METHODS", "build_rdkit_mol", "sanitized_fragment", "is_connected_valid", "connected_validity",
           "canonical_smiles", "canonicalize_smiles",
           "canonical_reference", "reference_from_molecules", "qm9_reference_smiles", "evaluate_molecules", "evaluate_file",
           "write_metrics_json", "write_sdf", "draw_grid"]

BOND_METHODS = ("table", "rdkit")
_REFERENCE_MEMO: dict[str, frozenset] = {}


def build_rdkit_mol(z, pos, method: str = "table", kekulize: bool = False, conformer: bool = True, bonds=None):
    """Unsanitized RDKit molecule (with a 3D conformer unless conformer=False); bonds from the distance table
    (EDM's build_molecule: atoms without explicit H counts, so RDKit may add implicit hydrogens) or from
    rdDetermineBonds (xyz2mol, Kim & Kim 2015). Returns None when rdDetermineBonds cannot assign bonds. `bonds`
    ([(i, j, order)], order 4 aromatic: a molecule's carried bonds) replaces the table's, built the same way.
    """
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    z, pos = np.asarray(z, dtype=np.int64), np.asarray(pos, dtype=np.float64)
    if method == "table" or bonds is not None:
        types = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE, 4: Chem.BondType.AROMATIC}
        mol = Chem.RWMol()
        for a in z:
            mol.AddAtom(Chem.Atom(int(a)))
        for i, j, order in bond_list(z, pos, kekulize=kekulize) if bonds is None else bonds:
            mol.AddBond(i, j, types[order])
        if conformer:
            conf = Chem.Conformer(len(z))
            for k, p in enumerate(pos.tolist()):
                conf.SetAtomPosition(k, Point3D(*p))
            mol.AddConformer(conf, assignId=True)
        return mol.GetMol()
    if method == "rdkit":
        from rdkit.Chem import rdDetermineBonds

        block = f"{len(z)}\n\n" + "\n".join(f"{Z_TO_SYMBOL[int(a)]} {x:.6f} {y:.6f} {w:.6f}" for a, (x, y, w) in zip(z, pos))
        mol = Chem.MolFromXYZBlock(block)
        if mol is None:
            return None
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=0)
        except Exception:  # no consistent bond orders / charges for this geometry
            return None
        return mol
    raise DataError(f"method={method!r}: expected one of {', '.join(BOND_METHODS)}")


def sanitized_fragment(mol):
    """Sanitize (RDKit valence rules) and keep the largest connected fragment; None when sanitization fails."""
    from rdkit import Chem

    if mol is None:
        return None
    mol = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(mol)
        if len(Chem.GetMolFrags(mol)) == 1:
            return mol
        frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=True)
    except Exception:
        return None
    return max(frags, key=lambda m: m.GetNumAtoms())


def is_connected_valid(mol) -> bool:
    """Whether the whole molecule (every atom, not its largest fragment) sanitizes and is one connected fragment:
    the validity that cannot be flattered by scattered atoms (EDM's validity keeps the largest fragment)."""
    from rdkit import Chem

    if mol is None or mol.GetNumAtoms() == 0:
        return False
    mol = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(mol)
    except Exception:
        return False
    return len(Chem.GetMolFrags(mol)) == 1


def connected_validity(mols: Sequence, method: str = "table", kekulize: bool = False) -> float:
    """Fraction of molecules that are one connected, sanitizable molecule (is_connected_valid)."""
    from rdkit import rdBase

    atoms = _atoms_list(mols)
    with rdBase.BlockLogs():
        ok = [is_connected_valid(build_rdkit_mol(z, p, method, kekulize, conformer=False)) for z, p in atoms]
    return sum(ok) / len(atoms)


def canonical_smiles(mol) -> str | None:
    """Canonical SMILES of a sanitized molecule: hydrogens implicit, no stereo (3D-built molecules carry none)."""
    from rdkit import Chem

    if mol is None:
        return None
    try:
        return Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False)
    except Exception:
        return None


def canonicalize_smiles(smiles: str) -> str | None:
    """The same canonical form for a SMILES string (largest fragment, no stereo); None if RDKit cannot parse it."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) else None  # sanitized, hydrogens removed
    if mol is None:
        return None
    if "." in smiles:
        mol = max(Chem.GetMolFrags(mol, asMols=True), key=lambda m: m.GetNumAtoms())
    return Chem.MolToSmiles(mol, isomericSmiles=False)


def canonical_reference(smiles: Iterable[str]) -> frozenset:
    """Canonicalised reference set, memoised per content within the process."""
    from rdkit import rdBase
    from tqdm import tqdm

    smiles = list(smiles)
    key = hashlib.sha1("\n".join(map(str, smiles)).encode()).hexdigest()
    if key not in _REFERENCE_MEMO:
        bar = tqdm(smiles, desc="canonical reference SMILES", disable=len(smiles) < 10_000, leave=False)
        with rdBase.BlockLogs():
            _REFERENCE_MEMO[key] = frozenset(c for c in map(canonicalize_smiles, bar) if c is not None)
    return _REFERENCE_MEMO[key]


def reference_from_molecules(mols: Sequence, method: str = "table", progress: bool = False) -> frozenset:
    """Canonical SMILES of reference molecules rebuilt from their 3-D atoms exactly as samples are (EDM's novelty
    reference, qm9/rdkit_functions.compute_qm9_smiles): bonds from `method`, the whole molecule sanitized (not its
    largest fragment), molecules that do not sanitize left out. A sample is novel only if no training molecule
    rebuilt by the same bond table gives its SMILES. The shipped SMILES are a different set: QM9's 100,000 training
    molecules rebuild to 97,371 distinct SMILES, 2,065 of which are not among the 99,953 canonicalised shipped
    ones, so a sample matching one of those counted as novel against the shipped set."""
    from rdkit import Chem, rdBase
    from tqdm import tqdm

    if method not in BOND_METHODS:
        raise DataError(f"method={method!r}: expected one of {', '.join(BOND_METHODS)}")
    out = set()
    with rdBase.BlockLogs():
        for z, p in tqdm(_atoms_list(mols), desc="reference SMILES from 3-D", disable=not progress, leave=False):
            mol = build_rdkit_mol(z, p, method, conformer=False)
            if mol is None:
                continue
            mol = Chem.Mol(mol)
            try:
                Chem.SanitizeMol(mol)
            except Exception:
                continue
            smiles = canonical_smiles(mol)
            if smiles is not None:
                out.add(smiles)
    return frozenset(out)


REFERENCE_SOURCES = ("3d", "shipped")


def qm9_reference_smiles(cache_dir=None, source: str = "3d", progress: bool | None = None) -> frozenset:
    """Canonical SMILES of the QM9 training split for novelty, cached on disk beside the QM9 cache after the first
    call. `source`: "3d" (default, EDM's: the training molecules rebuilt from their coordinates with the bond table,
    reference_from_molecules) or "shipped" (qm9pack's SMILES strings, canonicalised; inflates novelty)."""
    from rdkit import __version__ as rdkit_version

    if source not in REFERENCE_SOURCES:
        raise DataError(f"source={source!r}: expected one of {', '.join(REFERENCE_SOURCES)}")
    path = default_cache_dir(cache_dir) / f"qm9-train-canonical-smiles-{source}.json"
    if source == "shipped":
        raw = train_smiles(cache_dir=cache_dir)
        tag = hashlib.sha1(("\n".join(raw) + rdkit_version).encode()).hexdigest()
    else:
        ds = load_qm9(split="train", cache_dir=cache_dir)
        h = hashlib.sha1(rdkit_version.encode())
        h.update(ds.indices.tobytes())
        for key in ("offsets", "z", "pos"):
            h.update(np.ascontiguousarray(ds.arrays[key]).tobytes())
        h.update(Path(__file__).with_name("bonds.py").read_bytes())  # the bond table decides the SMILES
        tag = h.hexdigest()
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            if stored.get("tag") == tag:
                return frozenset(stored["smiles"])
        except (OSError, ValueError, AttributeError, KeyError):
            pass  # corrupt cache: rebuilt below
    if source == "shipped":
        ref = canonical_reference(raw)
    else:
        show = sys.stderr.isatty() if progress is None else progress  # about 40 s, once
        ref = reference_from_molecules([ds.atoms(i) for i in range(len(ds))], progress=show)
    write_json_atomic(path, {"tag": tag, "source": source, "smiles": sorted(ref)})
    return ref


def _atoms_list(mols: Sequence) -> list[tuple[np.ndarray, np.ndarray]]:
    out = [as_atoms(m) for m in mols]
    if not out:
        raise DataError("no molecules given")
    return out


def molecule_smiles(mols: Sequence, method: str = "table", progress: bool = False,
                    kekulize: bool = False) -> list[str | None]:
    """Canonical SMILES per molecule (None where the molecule is not valid)."""
    from rdkit import rdBase
    from tqdm import tqdm

    if method not in BOND_METHODS:
        raise DataError(f"method={method!r}: expected one of {', '.join(BOND_METHODS)}")
    atoms = _atoms_list(mols)
    with rdBase.BlockLogs():
        return [canonical_smiles(sanitized_fragment(build_rdkit_mol(z, p, method, kekulize, conformer=False)))
                for z, p in tqdm(atoms, desc="RDKit validity", disable=not progress, leave=False)]


def evaluate_molecules(mols: Sequence, reference_smiles: Iterable[str] | None = None, method: str = "table",
                       progress: bool = False, kekulize: bool = False) -> dict:
    """{n, atom_stability, molecule_stability, validity, connected_validity, uniqueness, novelty} (EDM's, plus one).

    validity = valid / n (EDM: the largest sanitizable fragment counts); connected_validity = fraction of samples
    that are, whole, one connected sanitizable molecule (two fragments or a stray atom do not count);
    uniqueness = distinct canonical SMILES / valid; novelty = unique SMILES not in the
    (canonicalised) reference / unique, None without a reference. method: "table" (bond-length table) or "rdkit"
    (rdDetermineBonds) for validity; kekulize=True adds the opt-in Kekule step (bonds.kekulize_orders).
    """
    atoms = _atoms_list(mols)
    stab = stability(atoms, kekulize=kekulize)
    smiles = [s for s in molecule_smiles(atoms, method, progress, kekulize) if s is not None]
    unique = set(smiles)
    novelty = None
    if reference_smiles is not None:
        ref = reference_smiles if isinstance(reference_smiles, frozenset) else canonical_reference(reference_smiles)
        novelty = len(unique - ref) / len(unique) if unique else 0.0
    return {
        "n": len(atoms),
        "atom_stability": stab["atom_stability"],
        "molecule_stability": stab["molecule_stability"],
        "validity": len(smiles) / len(atoms),
        "connected_validity": connected_validity(atoms, method, kekulize),
        "uniqueness": len(unique) / len(smiles) if smiles else 0.0,
        "novelty": novelty,
    }


def evaluate_file(path, reference_smiles: Iterable[str] | None = None, method: str = "table",
                  progress: bool = False, kekulize: bool = False) -> dict:
    """Evaluate every molecule of an .xyz or .sdf file (from gendiff or elsewhere)."""
    return evaluate_molecules(read_molecules(path), reference_smiles, method=method, progress=progress,
                              kekulize=kekulize)


def write_metrics_json(path, metrics: dict) -> Path:
    """Write the metrics object as JSON (atomic); novelty is null without a reference set."""
    keys = ("n", "atom_stability", "molecule_stability", "validity", "connected_validity", "uniqueness", "novelty")
    write_json_atomic(path, {k: metrics[k] for k in keys} | {k: v for k, v in metrics.items() if k not in keys})
    return Path(path)


def _depiction(z, pos, method: str, bonds=None):
    """(2D-ready molecule, legend): the valid largest fragment, else the bare connectivity marked invalid; with the
    molecule's carried `bonds` when it has them."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    raw = build_rdkit_mol(z, pos, method, bonds=bonds)
    frag = sanitized_fragment(raw)
    if frag is not None:
        mol, legend = Chem.RemoveHs(frag), canonical_smiles(frag) or ""
    else:
        mol, legend = Chem.RWMol(raw if raw is not None else Chem.Mol()), "invalid"
        for atom in mol.GetAtoms():
            atom.SetNoImplicit(True)
        mol.UpdatePropertyCache(strict=False)
        mol = mol.GetMol()
    try:
        AllChem.Compute2DCoords(mol)
    except Exception:
        mol = Chem.Mol()
    return mol, legend


def _drawable(mol, legend: str):
    """(mol, legend) if RDKit can draw the depiction, else (an empty molecule, 'undrawable'): the 2-D layout of a
    noise-like sample can put atoms on one point, where the drawer fails ('Cannot normalize a zero length vector')."""
    from rdkit import Chem
    from rdkit.Chem.Draw import rdMolDraw2D

    try:
        rdMolDraw2D.MolDraw2DCairo(50, 50).DrawMolecule(mol)
        return mol, legend
    except Exception:
        return Chem.Mol(), "undrawable"


def draw_grid(path, mols: Sequence, mols_per_row: int = 5, sub_image_size: tuple[int, int] = (250, 250),
              max_mols: int = 50, method: str = "table") -> Path:
    """PNG grid of 2D depictions (RDKit Draw.MolsToGridImage), legends = canonical SMILES or 'invalid'; molecules
    that carry bonds (records.carried_bonds) are drawn with them."""
    from rdkit import rdBase
    from rdkit.Chem import Draw

    mols = list(mols)[:max_mols]
    atoms = _atoms_list(mols)
    with rdBase.BlockLogs():
        pairs = [_drawable(*_depiction(z, p, method, carried_bonds(m))) for (z, p), m in zip(atoms, mols, strict=True)]
        image = Draw.MolsToGridImage([m for m, _ in pairs], molsPerRow=mols_per_row, subImgSize=tuple(sub_image_size),
                                     legends=[lg for _, lg in pairs], returnPNG=False)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            image.save(fh, format="PNG")
    return Path(path)
