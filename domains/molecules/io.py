"""XYZ and SDF (MDL V2000) reading and atomic writing; errors name the file and line."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from gendiff.errors import DataError
from gendiff.io import atomic_path

from .bonds import bond_list
from .records import ELEMENTS, SYMBOL_TO_Z, Z_TO_SYMBOL, carried_bonds, molecule_to_data

_LOWER_SYMBOL = {s.lower(): s for s in ELEMENTS}


def as_atoms(mol) -> tuple[np.ndarray, np.ndarray]:
    """(z int64 (N,), pos float64 (N,3)) from a Data record, a (z, pos) pair or a dict with z/pos."""
    if isinstance(mol, (tuple, list)) and len(mol) == 2:
        z, pos = mol
    elif isinstance(mol, dict):
        z, pos = mol["z"], mol["pos"]
    elif hasattr(mol, "z") and hasattr(mol, "pos"):
        z, pos = mol.z, mol.pos
    else:
        raise DataError(f"cannot read a molecule from {type(mol).__name__}; expected Data or (z, pos)")
    z = np.asarray(z.detach().cpu() if hasattr(z, "detach") else z).astype(np.int64).reshape(-1)
    pos = np.asarray(pos.detach().cpu() if hasattr(pos, "detach") else pos, dtype=np.float64).reshape(-1, 3)
    if len(z) != len(pos):
        raise DataError(f"molecule has {len(z)} atomic numbers but {len(pos)} positions")
    return z, pos


def _smiles_of(mol) -> str | None:
    s = mol.get("smiles") if isinstance(mol, dict) else getattr(mol, "smiles", None)
    return s if isinstance(s, str) and s else None


def _element(token: str, where: str) -> int:
    """Atomic number from a symbol (any case) or a number, checked against the vocabulary."""
    if token.isdigit():
        z = int(token)
        if z in Z_TO_SYMBOL:
            return z
    elif token.lower() in _LOWER_SYMBOL:
        return SYMBOL_TO_Z[_LOWER_SYMBOL[token.lower()]]
    raise DataError(f"{where}: unknown element {token!r} (vocabulary: {', '.join(ELEMENTS)})")


def _coord(token: str, where: str) -> float:
    try:
        value = float(token.replace("*^", "e"))
    except ValueError:
        raise DataError(f"{where}: bad coordinate {token!r}") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: non-finite coordinate {token!r}")
    return value


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def read_xyz(path) -> list:
    """Read one or many concatenated XYZ blocks (count line, comment line, `El x y z` lines)."""
    path = Path(path)
    lines = _read_lines(path)
    mols, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        head = lines[i].split()
        if len(head) != 1 or not head[0].isdigit() or int(head[0]) < 1:
            raise DataError(f"{path}:{i + 1}: malformed count line {lines[i].strip()!r} (expected a positive atom count)")
        n = int(head[0])
        if i + 1 + n >= len(lines):
            raise DataError(f"{path}:{len(lines)}: truncated block: line {i + 1} declares {n} atoms, "
                            f"file ends after {max(len(lines) - i - 2, 0)}")
        comment = lines[i + 1]
        z, pos = np.zeros(n, dtype=np.int64), np.zeros((n, 3))
        for k in range(n):
            ln = i + 2 + k
            tok = lines[ln].split()
            where = f"{path}:{ln + 1}"
            if len(tok) < 4:
                if len(tok) == 1 and tok[0].isdigit():
                    raise DataError(f"{where}: truncated block: line {i + 1} declares {n} atoms, found {k}")
                raise DataError(f"{where}: expected 'element x y z', got {lines[ln].strip()!r}")
            z[k] = _element(tok[0], where)
            pos[k] = [_coord(t, where) for t in tok[1:4]]
        smiles = next((t.split("=", 1)[1] for t in comment.split() if t.lower().startswith("smiles=")), None)
        mols.append(molecule_to_data(z, pos, smiles=smiles))
        i += 2 + n
    if not mols:
        raise DataError(f"{path}: no molecules found")
    return mols


def _sdf_atom(line: str, where: str) -> tuple[int, list[float]]:
    tok = line.split()
    if len(tok) < 4:
        raise DataError(f"{where}: malformed atom line {line.strip()!r}")
    if len(line) >= 34 and line[30] == " ":  # fixed-width V2000 columns (coordinates may touch)
        fields = [line[0:10], line[10:20], line[20:30]]
        symbol = line[31:34].strip()
    else:
        fields, symbol = tok[:3], tok[3]
    return _element(symbol, where), [_coord(f.strip(), where) for f in fields]


def read_sdf(path, keep_bonds: bool = False) -> list:
    """Read an SDF / MOL file (V2000): atoms and coordinates of every record; bonds are re-derived when needed, or,
    with `keep_bonds`, each record's bond block is kept as `bond_index` (2, B) / `bond_order` (B,) (1-3, 4 aromatic)."""
    path = Path(path)
    lines = _read_lines(path)
    mols, i = [], 0
    while i < len(lines):
        if not lines[i].strip() and all(not ln.strip() for ln in lines[i:]):
            break
        start = i
        counts_ln = i + 3
        if counts_ln >= len(lines):
            raise DataError(f"{path}:{len(lines)}: truncated record starting at line {start + 1} (no counts line)")
        counts = lines[counts_ln]
        where = f"{path}:{counts_ln + 1}"
        if "V3000" in counts:
            raise DataError(f"{where}: V3000 molfiles are not supported (write V2000)")
        try:
            n_atoms, n_bonds = int(counts[0:3]), int(counts[3:6])
        except ValueError:
            raise DataError(f"{where}: malformed counts line {counts.strip()!r}") from None
        if n_atoms < 1:
            raise DataError(f"{where}: counts line declares {n_atoms} atoms")
        end_atoms = counts_ln + 1 + n_atoms
        if end_atoms + n_bonds > len(lines):
            raise DataError(f"{path}:{len(lines)}: truncated record: line {counts_ln + 1} declares {n_atoms} atoms "
                            f"and {n_bonds} bonds, file ends first")
        z, pos = np.zeros(n_atoms, dtype=np.int64), np.zeros((n_atoms, 3))
        for k in range(n_atoms):
            ln = counts_ln + 1 + k
            z[k], pos[k] = _sdf_atom(lines[ln], f"{path}:{ln + 1}")
        bond_rows = []
        for k in range(n_bonds):
            ln = end_atoms + k
            tok = lines[ln].split()
            if len(tok) < 3 or not all(t.isdigit() for t in tok[:3]) or not (
                    1 <= int(tok[0]) <= n_atoms and 1 <= int(tok[1]) <= n_atoms):
                raise DataError(f"{path}:{ln + 1}: malformed bond line {lines[ln].strip()!r}")
            if keep_bonds and not 1 <= int(tok[2]) <= 4:
                raise DataError(f"{path}:{ln + 1}: bond type {tok[2]} (expected 1-3, or 4 aromatic)")
            bond_rows.append((int(tok[0]) - 1, int(tok[1]) - 1, int(tok[2])))
        i, smiles, has_end = end_atoms + n_bonds, None, False
        while i < len(lines) and lines[i].strip() != "$$$$":
            has_end = has_end or lines[i].startswith("M  END")
            if lines[i].startswith(">") and "<smiles>" in lines[i].lower() and i + 1 < len(lines):
                smiles = lines[i + 1].strip() or None
            i += 1
        if not has_end:
            raise DataError(f"{path}:{min(i + 1, len(lines))}: record starting at line {start + 1} has no 'M  END'")
        mol = molecule_to_data(z, pos, smiles=smiles)
        if keep_bonds:
            rows = np.array(bond_rows, dtype=np.int64).reshape(-1, 3)
            mol.bond_index, mol.bond_order = torch.as_tensor(rows[:, :2].T.copy()), torch.as_tensor(rows[:, 2].copy())
        mols.append(mol)
        i += 1
    if not mols:
        raise DataError(f"{path}: no molecules found")
    return mols


def read_molecules(path, keep_bonds: bool = False) -> list:
    """Dispatch on the suffix: .xyz -> read_xyz, .sdf/.mol -> read_sdf (`keep_bonds`: its bond blocks; an .xyz
    file has none)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xyz":
        if keep_bonds:
            raise DataError(f"{path}: an .xyz file has no bonds to keep (write .sdf)")
        return read_xyz(path)
    if suffix in (".sdf", ".mol", ".sd"):
        return read_sdf(path, keep_bonds)
    raise DataError(f"{path}: unknown molecule file type {suffix!r} (expected .xyz or .sdf)")


def _symbol(z: int) -> str:
    if int(z) not in Z_TO_SYMBOL:
        raise DataError(f"atomic number {int(z)} outside the vocabulary {ELEMENTS}; cannot write it")
    return Z_TO_SYMBOL[int(z)]


def format_xyz(mols: Iterable, comments: Iterable[str] | None = None) -> str:
    """Concatenated XYZ text; the comment line carries `smiles=...` when the molecule knows its SMILES."""
    out = []
    comments = list(comments) if comments is not None else None
    for k, mol in enumerate(mols):
        z, pos = as_atoms(mol)
        comment = comments[k] if comments is not None else f"gendiff molecule {k}"
        smiles = _smiles_of(mol)
        if smiles and "smiles=" not in comment:
            comment += f" smiles={smiles}"
        out.append(str(len(z)))
        out.append(comment.replace("\n", " "))
        out.extend(f"{_symbol(a):<2s} {x:14.8f} {y:14.8f} {zz:14.8f}" for a, (x, y, zz) in zip(z, pos))
    return "\n".join(out) + "\n"


def write_xyz(path, mols, comments=None) -> Path:
    """Write molecules as concatenated XYZ blocks, atomically."""
    text = format_xyz(list(mols), comments)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def format_mol_block(z, pos, bonds, title: str = "") -> str:
    """One V2000 molfile block with 3D coordinates and the given [(i, j, order)] bonds."""
    if len(z) > 999 or len(bonds) > 999:
        raise DataError(f"molecule with {len(z)} atoms / {len(bonds)} bonds exceeds the V2000 limit of 999")
    lines = [title, "   gendiff          3D", "",
             f"{len(z):3d}{len(bonds):3d}  0  0  0  0  0  0  0  0999 V2000"]
    lines += [f"{x:10.4f}{y:10.4f}{zz:10.4f} {_symbol(a):<3s} 0  0  0  0  0  0  0  0  0  0  0  0"
              for a, (x, y, zz) in zip(z, pos)]
    lines += [f"{i + 1:3d}{j + 1:3d}{o:3d}  0" for i, j, o in bonds]
    lines.append("M  END")
    return "\n".join(lines)


SDF_BONDS = ("auto", "carried", "table", "none")


def write_sdf(path, mols, bonds: str = "auto") -> Path:
    """Write molecules to one SDF (V2000, 3D coordinates), atomically.

    bonds="auto" writes the bonds a molecule carries (records.carried_bonds: an explicit-bond run's generated
    bonds) and, for one that carries none, those of the distance table; "carried" requires carried bonds; "table"
    always derives bond orders with bonds.bond_list; "none" writes atoms only.
    """
    if bonds not in SDF_BONDS:
        raise DataError(f"bonds={bonds!r}: expected one of {', '.join(SDF_BONDS)}")
    records = []
    for k, mol in enumerate(mols):
        z, pos = as_atoms(mol)
        carried = carried_bonds(mol) if bonds in ("auto", "carried") else None
        if bonds == "carried" and carried is None:
            raise DataError(f"molecule {k} carries no bonds (bonds='carried')")
        blist = carried if carried is not None else bond_list(z, pos) if bonds != "none" else []
        block = format_mol_block(z, pos, blist, title=f"gendiff molecule {k}")
        smiles = _smiles_of(mol)
        if smiles:
            block += f"\n> <SMILES>\n{smiles}\n"
        records.append(block + "\n$$$$\n")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(records))
    return Path(path)


def write_molecules(path, mols) -> Path:
    """Dispatch on the suffix: .xyz -> write_xyz, .sdf -> write_sdf."""
    suffix = Path(path).suffix.lower()
    if suffix == ".xyz":
        return write_xyz(path, mols)
    if suffix in (".sdf", ".sd", ".mol"):
        return write_sdf(path, mols)
    raise DataError(f"{os.fspath(path)}: unknown molecule file type {suffix!r} (expected .xyz or .sdf)")
