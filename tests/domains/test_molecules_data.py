"""QM9 loading, cache integrity, splits, and XYZ/SDF reading/writing with line-numbered errors."""

import numpy as np
import pytest
import torch

from gendiff.errors import DataError
from gendiff.domains.molecules import data as D
from gendiff.domains.molecules import io as IO

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def qm9_all():
    return D.load_qm9(split="all")


def _mols():
    methane = (np.array([6, 1, 1, 1, 1]), np.array([[0.0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                                                       [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]]))
    rng = np.random.default_rng(0)
    other = D.molecule_to_data(np.array([8, 6, 7, 9, 1]), rng.normal(size=(5, 3)) * 3, smiles="not-checked")
    return [methane, other]


# ---------------------------------------------------------------- splits and QM9
def test_split_sizes_disjoint_and_deterministic():
    parts = {s: D.split_indices(s) for s in ("train", "valid", "test")}
    assert {s: len(v) for s, v in parts.items()} == {"train": 100_000, "valid": 17_748, "test": 13_083}
    union = np.concatenate(list(parts.values()))
    assert len(np.unique(union)) == D.QM9_SIZE == len(union)
    for s, v in parts.items():
        assert np.array_equal(v, D.split_indices(s))
    assert not np.array_equal(D.split_indices("test", seed=1), parts["test"])
    with pytest.raises(DataError, match="split='bogus'"):
        D.split_indices("bogus")


def test_qm9_dataset_contents(qm9_all):
    assert len(qm9_all) == 130_831
    assert qm9_all.load_seconds > 0  # recorded; how fast is the benchmarks' to say, not a timed test's
    sizes = qm9_all.num_atoms
    assert sizes.max() == 29 and sizes.min() >= 1
    arrays = qm9_all.arrays
    assert set(np.unique(arrays["z"]).tolist()) == set(D.ATOMIC_NUMBERS)
    mol = qm9_all[0]  # QM9 molecule 1 is methane
    assert mol.smiles == "C" and mol.z.tolist() == [6, 1, 1, 1, 1]
    assert mol.pos.dtype == torch.float32 and mol.pos.shape == (5, 3) and mol.z.dtype == torch.long
    assert torch.equal(mol.x.argmax(1), torch.tensor([1, 0, 0, 0, 0])) and mol.x.sum().item() == 5
    assert torch.equal(mol.charge.squeeze(1), mol.z.float()) and mol.num_nodes == 5
    ch = torch.linalg.norm(mol.pos[1:] - mol.pos[0], dim=1)
    assert torch.allclose(ch, torch.full((4,), 1.0919), atol=2e-3)  # C-H in angstrom
    batch = qm9_all.collate_fn([qm9_all[i] for i in range(4)])
    assert batch.num_graphs == 4 and batch.pos.shape[0] == int(sizes[:4].sum()) and len(batch.smiles) == 4


def test_splits_and_histogram_match_edm():
    train = D.load_qm9(split="train")
    assert [len(D.load_qm9(split=s)) for s in ("train", "valid", "test")] == [100_000, 17_748, 13_083]
    hist = D.qm9_atom_count_histogram()
    assert sum(hist.values()) == 100_000
    # EDM's QM9 training-split histogram (configs/datasets_config.py); equal because the split recipe is Cormorant's.
    assert (hist[3], hist[19], hist[22], hist[29]) == (1, 13832, 3393, 25)
    smiles = D.train_smiles()
    assert len(smiles) == 100_000 and smiles[0] == train.smiles(0)


def _fake_root(tmp_path, extra_element=False):
    root = tmp_path / "csv"
    root.mkdir()
    header = "XYZ_file,Index,SMILES,N_atoms,Elements,XYZ_Ang,Mulliken_pop\n"
    rows = [
        (1, "C", ["C", "H", "H", "H", "H"], [[0, 0, 0], [0.6, 0.6, 0.6], [-0.6, -0.6, 0.6], [-0.6, 0.6, -0.6], [0.6, -0.6, -0.6]]),
        (2, "N", ["N", "H", "H", "H"], [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]),
        (5, "O", ["O", "H", "Cl" if extra_element else "H"], [[0, 0, 0], [0.96, 0, 0], [-0.2, 0.93, 0]]),
    ]
    for k, (idx, smi, el, xyz) in enumerate(rows):
        els = "[" + ",".join(f"'{e}'" for e in el) + "]"
        pos = "[" + ",".join("[" + ",".join(str(float(v)) for v in p) + "]" for p in xyz) + "]"
        (root / f"qm9_part{k + 1}.csv").write_text(
            header + f'"dsgdb9nsd_{idx:06d}.xyz",{idx},"{smi}",{len(el)},"{els}","{pos}","[0]"\n')
    return root


def test_cache_build_verify_and_rebuild_when_corrupt(tmp_path):
    root, cache = _fake_root(tmp_path), tmp_path / "cache"
    ds = D.load_qm9(root=root, split="all", cache_dir=cache)
    assert len(ds) == 3 and [ds.smiles(i) for i in range(3)] == ["C", "N", "O"]
    assert ds[1].z.tolist() == [7, 1, 1, 1] and np.allclose(ds[2].pos[1].numpy(), [0.96, 0, 0])
    (path,) = cache.glob("qm9-v*.npz")
    good = path.read_bytes()
    # 1) truncated/garbage file, 2) valid npz whose arrays no longer match the stored checksum
    path.write_bytes(good[: len(good) // 2])
    D._MEMO.clear()
    assert len(D.load_qm9(root=root, split="all", cache_dir=cache)) == 3
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["pos"] = arrays["pos"] + 1.0
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    D._MEMO.clear()
    ds = D.load_qm9(root=root, split="all", cache_dir=cache)
    assert np.allclose(ds[2].pos[1].numpy(), [0.96, 0, 0])
    assert path.read_bytes() == good  # rebuilt identically
    D._MEMO.clear()


def test_cache_rejects_unknown_element_and_missing_files(tmp_path):
    root = _fake_root(tmp_path, extra_element=True)
    with pytest.raises(DataError, match=r"qm9_part3\.csv.*Cl"):
        D.load_qm9(root=root, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="missing QM9 file"):
        D.load_qm9(root=tmp_path, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- XYZ / SDF
@pytest.mark.parametrize("suffix", [".xyz", ".sdf"])
def test_round_trip(tmp_path, suffix, qm9_all):
    mols = _mols() + [qm9_all[i] for i in (5, 1000, 130_000)]
    path = tmp_path / f"m{suffix}"
    IO.write_molecules(path, mols)
    back = D.load_molecules(path)
    assert len(back) == len(mols)
    for m, b in zip(mols, back):
        z, pos = IO.as_atoms(m)
        assert b.z.tolist() == z.tolist()
        assert np.abs(b.pos.numpy() - pos).max() < 1e-4
        assert torch.equal(b.x.argmax(1), torch.as_tensor(D.element_index(z)))
    assert back[-1].smiles == qm9_all[130_000].smiles and back[1].smiles == "not-checked"


def test_sdf_is_readable_by_rdkit(tmp_path, qm9_all):
    from rdkit import Chem

    path = tmp_path / "m.sdf"
    IO.write_sdf(path, [qm9_all[i] for i in range(3)])
    mols = list(Chem.SDMolSupplier(str(path), removeHs=False))
    assert [m.GetNumAtoms() for m in mols] == [5, 4, 3]
    assert mols[0].GetConformer().Is3D() and Chem.MolToSmiles(Chem.RemoveHs(mols[2])) == "O"


def test_reads_foreign_xyz_formats(tmp_path):
    path = tmp_path / "qm9style.xyz"  # QM9's own files: 5 columns, Mathematica exponents, lower-case symbols ok
    path.write_text("2\ngdb 1\nc 0.0 0.0 1.5*^-3 -0.1\n1 1.09 0 0 0.1\n\n")
    (mol,) = D.load_molecules(path)
    assert mol.z.tolist() == [6, 1] and abs(mol.pos[0, 2].item() - 1.5e-3) < 1e-9


BAD_XYZ = {
    "unknown element": ("2\n\nC 0 0 0\nCl 1 0 0\n", 4, "unknown element 'Cl'"),
    "malformed count": ("2\n\nC 0 0 0\nH 1 0 0\nthree\n\nC 0 0 0\n", 5, "malformed count line"),
    "truncated block": ("3\n\nC 0 0 0\nH 1 0 0\n", 4, "truncated block"),
    "truncated then next": ("3\n\nC 0 0 0\n1\n\nH 0 0 0\n", 4, "truncated block"),
    "bad coordinate": ("2\n\nC 0 0 0\nH 1 0.x 0\n", 4, "bad coordinate '0.x'"),
    "non-finite": ("1\n\nC 0 nan 0\n", 3, "non-finite coordinate"),
    "missing column": ("1\n\nC 0 0\n", 3, "expected 'element x y z'"),
}


@pytest.mark.parametrize("case", sorted(BAD_XYZ))
def test_bad_xyz_names_file_and_line(tmp_path, case):
    text, line, what = BAD_XYZ[case]
    path = tmp_path / "bad.xyz"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        D.load_molecules(path)
    assert f"{path}:{line}:" in str(err.value) and what in str(err.value)


def _sdf(atoms, bonds="", counts=None):
    n = len(atoms.strip().splitlines())
    nb = len(bonds.strip().splitlines()) if bonds.strip() else 0
    counts = counts or f"{n:3d}{nb:3d}  0  0  0  0  0  0  0  0999 V2000"
    return f"t\n  x\n\n{counts}\n{atoms}{bonds}M  END\n$$$$\n"


ATOM = "{:10.4f}{:10.4f}{:10.4f} {:<3s} 0  0  0  0  0  0  0  0  0  0  0  0\n"
GOOD_ATOMS = ATOM.format(0, 0, 0, "C") + ATOM.format(1.09, 0, 0, "H")
BAD_SDF = {
    "unknown element": (_sdf(ATOM.format(0, 0, 0, "C") + ATOM.format(1.09, 0, 0, "Xe")), 6, "unknown element 'Xe'"),
    "malformed counts": (_sdf(GOOD_ATOMS, counts=" x  1  0  0  0  0  0  0  0  0999 V2000"), 4, "malformed counts line"),
    "truncated record": ("t\n  x\n\n  3  0  0  0  0  0  0  0  0  0999 V2000\n" + GOOD_ATOMS, 6, "truncated record"),
    "bad coordinate": (_sdf(ATOM.format(0, 0, 0, "C").replace("0.0000", "0.0a00", 1) + ATOM.format(1, 0, 0, "H")), 5,
                       "bad coordinate"),
    "bad bond": (_sdf(GOOD_ATOMS, "  1  7  1  0\n"), 7, "malformed bond line"),
    "v3000": ("t\n  x\n\n  0  0  0     0  0            999 V3000\n", 4, "V3000"),
    "missing M END": ("t\n  x\n\n  2  0  0  0  0  0  0  0  0  0999 V2000\n" + GOOD_ATOMS + "$$$$\n", 7, "no 'M  END'"),
}


@pytest.mark.parametrize("case", sorted(BAD_SDF))
def test_bad_sdf_names_file_and_line(tmp_path, case):
    text, line, what = BAD_SDF[case]
    path = tmp_path / "bad.sdf"
    path.write_text(_sdf(GOOD_ATOMS) + text)  # a good record first: 8 lines; numbers count through the file
    with pytest.raises(DataError) as err:
        D.load_molecules(path)
    assert f"{path}:{line + 8}:" in str(err.value) and what in str(err.value), str(err.value)


def test_other_input_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        D.load_molecules(tmp_path / "nope.xyz")
    (tmp_path / "m.pdb").write_text("")
    with pytest.raises(DataError, match=r"m\.pdb.*unknown molecule file type"):
        D.load_molecules(tmp_path / "m.pdb")
    (tmp_path / "e.xyz").write_text("\n\n")
    with pytest.raises(DataError, match="no molecules"):
        D.load_molecules(tmp_path / "e.xyz")
    with pytest.raises(DataError, match=r"\[17\]"):
        D.molecule_to_data([6, 17], np.zeros((2, 3)))
    with pytest.raises(DataError, match="atomic number 17"):
        IO.write_xyz(tmp_path / "w.xyz", [(np.array([17]), np.zeros((1, 3)))])
    assert not (tmp_path / "w.xyz").exists()
