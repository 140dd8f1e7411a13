"""Explicit bonds diffused with the atoms (bonds='explicit'): the packed state (bondstate.py), the EGNN's bond path,
the training bonds (bonddata.py), the generated-bond metrics (bondmetrics.py), SDF output, the recipe switch and its
config round trip; old configs without the switch still load."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from gendiff.domains import molecules
from gendiff.domains.molecules import bonddata, bondmetrics, bondstate
from gendiff.domains.molecules import model as M
from gendiff.domains.molecules.io import read_sdf, write_sdf
from gendiff.domains.molecules.records import carried_bonds, molecule_to_data
from gendiff.errors import ConfigError, DataError
from gendiff.schedules import get_schedule
from tests._molecules import rotation

torch.set_num_threads(1)
Chem = pytest.importorskip("rdkit.Chem")
BONDS = molecules.runconfig.bonds_config("explicit")
TINY = dict(hidden=16, layers=2)


def from_smiles(smiles: str, seed: int = 0, embed: bool = True):
    """(Data with RDKit's 3-D conformer, kekulized [(i, j, order)]) of a SMILES with explicit hydrogens."""
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    Chem.Kekulize(mol, clearAromaticFlags=True)
    if embed:
        assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
        pos = mol.GetConformer().GetPositions()
    else:
        pos = np.zeros((mol.GetNumAtoms(), 3))
    bonds = sorted(
        (
            min(b.GetBeginAtomIdx(), b.GetEndAtomIdx()),
            max(b.GetBeginAtomIdx(), b.GetEndAtomIdx()),
            int(b.GetBondTypeAsDouble()),
        )
        for b in mol.GetBonds()
    )
    return molecule_to_data([a.GetAtomicNum() for a in mol.GetAtoms()], pos), bonds


def with_bonds(data, bonds):
    rows = np.array(bonds, dtype=np.int64).reshape(-1, 3)
    return bonddata.attach_bonds(data, rows[:, :2], rows[:, 2])


TRAIN_SMILES = ("CCO", "C=O", "CC#N", "c1ccccc1", "CC(=O)O", "N", "O", "CF")


def training_molecules(copies: int = 3):
    return [from_smiles(s, seed=k)[0] for k in range(copies) for s in TRAIN_SMILES]


def random_state(sizes=(5, 4, 3), seed=1):
    """A packed bonds state (N + P, STATE_DIM) with random atoms and random one-hot bond types, and its graph."""
    gen = torch.Generator().manual_seed(seed)
    vec = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    g = M.bond_graph(vec, BONDS)
    nodes = torch.randn(vec.numel(), M.STATE_DIM, generator=gen)
    nodes[:, :3] = M.ZeroCoMSpace().project(nodes[:, :3], vec)
    classes = torch.randint(0, 4, (g.num_pairs,), generator=gen)
    pairs = torch.nn.functional.one_hot(classes, 4).float() / 4 + 0.1 * torch.randn(g.num_pairs, 4, generator=gen)
    return g.pack(nodes, pairs), g


def tiny_bond_net(seed=0):
    torch.manual_seed(seed)
    return M.build_net("egnn", hidden_nf=16, n_layers=2, bond_nf=4).eval()


def dense(g, pairs):
    """(N, N, K) symmetric matrix of per-pair values."""
    out = pairs.new_zeros(g.num_nodes, g.num_nodes, pairs.shape[1])
    out[g.pair_i, g.pair_j] = pairs
    out[g.pair_j, g.pair_i] = pairs
    return out


def test_bonded_egnn_is_equivariant_with_invariant_atom_and_bond_outputs():
    net = tiny_bond_net()
    x, g = random_state()
    t = torch.full((x.shape[0],), 0.3)
    rot, shift = rotation(), torch.tensor([0.4, -1.0, 2.5])
    moved = x.clone()
    moved[: g.num_nodes, :3] = moved[: g.num_nodes, :3] @ rot.T + shift
    out, out_moved = net(x, t, mask=g), net(moved, t, mask=g)
    (n0, b0), (n1, b1) = g.split(out), g.split(out_moved)
    assert torch.allclose(n1[:, :3], n0[:, :3] @ rot.T, atol=1e-4)  # position output: rotated, not shifted
    assert torch.allclose(n1[:, 3:], n0[:, 3:], atol=1e-4)  # atom features: invariant
    assert torch.allclose(b1, b0, atol=1e-4)  # bond outputs: invariant
    assert torch.equal(out[g.num_nodes :, 4:], torch.zeros_like(out[g.num_nodes :, 4:]))  # padding stays zero
    assert b0.abs().sum() > 0 and torch.isfinite(out).all()


def test_bond_outputs_are_permutation_equivariant_and_symmetric():
    net = tiny_bond_net(1)
    sizes = (5, 4)
    x, g = random_state(sizes, seed=3)
    t = torch.full((x.shape[0],), 0.6)
    nodes, pairs = g.split(x)
    perm = torch.cat(
        [
            torch.randperm(5, generator=torch.Generator().manual_seed(0)),
            5 + torch.randperm(4, generator=torch.Generator().manual_seed(1)),
        ]
    )
    g2 = M.bond_graph(g.batch[perm], BONDS)  # the same batch vector: atoms permuted within their molecules
    d_in = dense(g, pairs)[perm][:, perm]
    x2 = g2.pack(nodes[perm], d_in[g2.pair_i, g2.pair_j])
    n_out, b_out = g.split(net(x, t, mask=g))
    n_out2, b_out2 = g2.split(net(x2, t, mask=g2))
    assert torch.allclose(n_out2, n_out[perm], atol=1e-4)
    assert torch.allclose(dense(g2, b_out2), dense(g, b_out)[perm][:, perm], atol=1e-4)
    swapped = dataclasses.replace(g, pair_i=g.pair_j, pair_j=g.pair_i)  # each pair seen as (j, i): the same output
    assert torch.allclose(g.split(net(x, t, mask=swapped))[1], b_out, atol=1e-5)


def test_graph_pairs_and_space():
    x, g = random_state((4, 1, 3))
    assert g.num_pairs == 6 + 0 + 3 and bool((g.pair_i < g.pair_j).all())
    assert torch.equal(g.batch[g.pair_i], g.batch[g.pair_j])
    assert torch.equal(g.pair_index(g.pair_j, g.pair_i), torch.arange(g.num_pairs))  # either order finds a pair
    assert torch.equal(
        torch.sort(torch.minimum(g.row, g.col) * 8 + torch.maximum(g.row, g.col))[0],
        torch.sort(torch.cat([g.pair_i * 8 + g.pair_j] * 2))[0],
    )
    with pytest.raises(DataError, match="another molecule"):
        g.pair_index(torch.tensor([0]), torch.tensor([4]))
    space = M.bond_space(dict(BONDS, weight=2.0))
    noise = space.sample(x, g, torch.Generator().manual_seed(0))
    nodes, pairs = g.split(noise)
    assert torch.allclose(M.ZeroCoMSpace().project(nodes[:, :3], g.batch), nodes[:, :3], atol=1e-6)
    assert torch.equal(noise[g.num_nodes :, 4:], torch.zeros(g.num_pairs, M.STATE_DIM - 4))  # one draw per pair
    assert torch.allclose(space.project(noise, g), noise, atol=1e-6)
    err = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    e_nodes, e_pairs = g.split(err)
    want = []
    for k in range(3):
        node_mean = e_nodes[g.batch == k].mean()
        pair_sel = g.batch[g.pair_i] == k
        want.append(node_mean + (2.0 * e_pairs[pair_sel].mean() if pair_sel.any() else 0.0))
    assert torch.allclose(space.reduce(err, g), torch.stack(want), atol=1e-6)
    assert torch.equal(space.per_row(torch.tensor([1.0, 2.0, 3.0]), g)[: g.num_nodes], g.batch.float() + 1)
    assert space.count(x, g).tolist() == [4 * 9 + 6 * 4, 9, 3 * 9 + 3 * 4]


def test_bond_features_round_trip_through_decode():
    from torch_geometric.data import Batch

    mols = [with_bonds(*from_smiles(s, embed=False)) for s in ("CCO", "C#N", "c1ccccc1")]
    batch = Batch.from_data_list(mols)
    x0, vec = M.encode(batch)
    g = M.bond_graph(vec, BONDS)
    feats = bondstate.bond_features(batch, g)
    assert feats.shape == (g.num_pairs, 4) and torch.allclose(feats.sum(-1), torch.full((g.num_pairs,), 0.25))
    back = M.decode_state(g.pack(x0, feats), g)
    for mol, orig in zip(back, mols, strict=True):
        assert carried_bonds(mol) == carried_bonds(orig)
    batch.bond_order = batch.bond_order.clone()
    batch.bond_order[0] = 4
    with pytest.raises(DataError, match="kekulize"):
        bondstate.bond_features(batch, g)


def test_loss_is_atoms_plus_weighted_pairs():
    from torch_geometric.data import Batch

    batch = Batch.from_data_list(bonddata.with_bonds(training_molecules(1)[:4]))
    sched = get_schedule("polynomial")
    den = M.build_denoiser("egnn", sched, "x0", dict(hidden_nf=8, n_layers=1, bond_nf=4))
    losses = []
    for w in (0.0, 1.0, 3.0):
        step = M.make_step_fn(
            sched, weighting=M.build_weighting(M.parse_weighting("clamped_snr")), bonds=dict(BONDS, weight=w)
        )
        losses.append(step(den, batch, torch.Generator().manual_seed(0)).item())
    pair_part = losses[1] - losses[0]
    assert pair_part > 0 and losses[2] == pytest.approx(losses[0] + 3.0 * pair_part, rel=1e-5)


@pytest.mark.parametrize(
    "smiles,stable",
    [
        ("c1ccccc1", True),  # benzene, kekulized: alternating double bonds
        ("CCO", True),  # ethanol
        ("CC#N", True),  # acetonitrile
        ("OC(=O)C(F)(F)F", True),  # trifluoroacetic acid
        ("C[N+](=O)[O-]", False),  # nitromethane: N with four bonds, one O with one (charges, not neutral valences)
        ("[NH3+]CC([O-])=O", False),  # glycine zwitterion
    ],
)
def test_strict_neutral_valences_of_known_molecules(smiles, stable):
    data, bonds = from_smiles(smiles, embed=False)
    assert bool(bondmetrics.strictly_stable(data.z, bonds).all()) == stable


def test_aromatic_bonds_count_one_and_a_half():
    data, bonds = from_smiles("c1ccccc1", embed=False)
    aromatic = [(i, j, 4 if data.z[i] == data.z[j] == 6 else o) for i, j, o in bonds]
    assert bondmetrics.strictly_stable(data.z, aromatic).all()
    with pytest.raises(DataError, match="order"):
        bondmetrics.carried_valences(data.z, [(0, 1, 5)])


def test_generated_bond_metrics_sdf_and_rdkit(tmp_path):
    mols = [with_bonds(*from_smiles(s)) for s in ("CCO", "c1ccccc1", "C[N+](=O)[O-]")]
    scores = bondmetrics.generated_bond_metrics(mols)
    assert scores["molecule_stability_generated_bonds"] == pytest.approx(2 / 3)
    assert scores["atom_stability_generated_bonds"] == pytest.approx((9 + 12 + 5) / (9 + 12 + 7))
    assert scores["validity_generated_bonds"] == pytest.approx(2 / 3)  # neutral N with four bonds fails RDKit
    assert scores["connected_validity_generated_bonds"] == pytest.approx(2 / 3)
    path = write_sdf(tmp_path / "gen.sdf", mols)  # bonds='auto': the carried bonds
    supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=True)
    read = list(supplier)
    assert read[0] is not None and read[1] is not None and read[2] is None
    assert Chem.MolToSmiles(Chem.RemoveHs(read[1])) == "c1ccccc1"
    back = read_sdf(path, keep_bonds=True)
    assert [carried_bonds(m) for m in back] == [carried_bonds(m) for m in mols]
    assert carried_bonds(read_sdf(path)[0]) is None  # without keep_bonds, as before
    got = molecules.evaluate(input=path, file_bonds=True)
    assert {k: got[k] for k in bondmetrics.GENERATED_BOND_KEYS} == pytest.approx(scores)
    assert not set(bondmetrics.GENERATED_BOND_KEYS) & set(molecules.evaluate(input=path))


def test_training_bonds_from_geometry():
    data, bonds = from_smiles("CC(=O)OC#N", seed=3)  # xyz2mol recovers RDKit's own kekulized bonds
    pairs, orders, source = bonddata.molecule_bonds(data.z, data.pos)
    assert source == "rdkit" and [(int(i), int(j), int(o)) for (i, j), o in zip(pairs, orders, strict=True)] == bonds
    pairs_t, orders_t = bonddata.table_bonds(data.z, data.pos)
    assert bondmetrics.strictly_stable(
        data.z, [(int(i), int(j), int(o)) for (i, j), o in zip(pairs_t, orders_t, strict=True)]
    ).all()
    far = molecule_to_data([6, 8], [[0, 0, 0], [5, 0, 0]])  # nothing bonded: xyz2mol gives radicals, table none
    p, o, source = bonddata.molecule_bonds(far.z, far.pos)
    assert source == "table" and len(o) == 0


def test_qm9_first_molecules_get_valence_exact_bonds():
    from gendiff.domains.molecules.data import load_qm9_arrays

    arrays = load_qm9_arrays()
    first = {k: arrays[k] for k in ("z", "pos")} | {"offsets": arrays["offsets"][:31]}
    table = bonddata.build_bond_table(first)
    assert len(table["offsets"]) == 31
    for k in range(30):
        s = slice(int(arrays["offsets"][k]), int(arrays["offsets"][k + 1]))
        b = slice(int(table["offsets"][k]), int(table["offsets"][k + 1]))
        bonds = [(int(i), int(j), int(o)) for (i, j), o in zip(table["pairs"][b], table["orders"][b], strict=True)]
        assert bondmetrics.strictly_stable(arrays["z"][s], bonds).all(), k
    assert table["orders"][table["offsets"][4] : table["offsets"][5]].tolist() == [3, 1]  # HCN: C#N and C-H


@pytest.fixture(scope="module")
def bond_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("bonds")
    molecules.train(
        data=training_molecules(),
        out=run,
        bonds="explicit",
        bond_weight=2.0,
        max_steps=3,
        batch_size=8,
        lr=1e-3,
        progress=False,
        seed=1,
        **TINY,
    )
    return run


def test_bond_run_trains_samples_and_writes_generated_bonds(bond_run, tmp_path):
    cfg = json.loads((bond_run / "config.json").read_text())
    assert cfg["recipe"]["bonds"] == dict(BONDS, weight=2.0) and cfg["net"]["bond_nf"] == 4
    assert cfg["recipe"]["weighting"]["name"] == "clamped_snr" and cfg["prediction"] == "x0"
    for sampler in ("ancestral", "dpm_solver_pp", "heun", "euler_maruyama"):
        mols = molecules.sample(run=bond_run, n=3, sampler=sampler, steps=3, seed=2, progress=False, device="cpu")
        for mol in mols:
            bonds = carried_bonds(mol)
            assert bonds is not None and all(0 <= i < j < mol.num_nodes and 1 <= o <= 3 for i, j, o in bonds)
            assert len({(i, j) for i, j, _ in bonds}) == len(bonds)  # one type per unordered pair: symmetric
    path = tmp_path / "gen.sdf"
    molecules.write_molecules(path, mols)
    assert [carried_bonds(m) for m in read_sdf(path, keep_bonds=True)] == [carried_bonds(m) for m in mols]
    metrics = molecules.evaluate(molecules=mols)
    assert set(bondmetrics.GENERATED_BOND_KEYS) <= set(metrics) and "molecule_stability" in metrics
    with pytest.raises(ConfigError, match="cannot resume"):
        molecules.train(
            data=training_molecules(),
            out=bond_run,
            max_steps=4,
            batch_size=8,
            progress=False,
            resume=True,
            seed=1,
            **TINY,
        )


def test_cli_train_sample_evaluate_with_bonds(tmp_path, capsys):
    from gendiff.cli import main

    data = write_sdf(tmp_path / "train.sdf", training_molecules(2))
    run, out = tmp_path / "run", tmp_path / "gen.sdf"
    assert (
        main(
            [
                "train",
                "molecules",
                "--data",
                str(data),
                "--bonds",
                "explicit",
                "--out",
                str(run),
                "--max-steps",
                "2",
                "--hidden",
                "8",
                "--layers",
                "1",
                "--batch-size",
                "8",
            ]
        )
        == 0
    )
    assert main(["sample", "molecules", "--run", str(run), "--n", "3", "--steps", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "molecules", "--run", str(run), "--n", "3", "--steps", "3", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(bondmetrics.GENERATED_BOND_KEYS) <= set(metrics)
    assert len(read_sdf(out, keep_bonds=True)) == 3


def test_old_configs_without_bonds_still_load():
    from gendiff.domains.molecules.loading import read_run

    cfg = read_run("pretrained:qm9").config
    assert "bonds" not in cfg["recipe"] and "bond_nf" not in cfg["net"]
    assert molecules.recipe(cfg)["bonds"] is None
    assert molecules.recipe({k: v for k, v in cfg.items() if k != "recipe"})["bonds"] is None  # before recipes
    mols = molecules.sample(run="pretrained:qm9", n=2, steps=3, progress=False, device="cpu")
    assert all(carried_bonds(m) is None for m in mols)
    assert "bonds" not in molecules.TrainOptions().recipe() and "bond_nf" not in molecules.TrainOptions().net_config()
    with pytest.raises(ConfigError, match="bond_nf"):
        molecules.recipe({**cfg, "net": {**cfg["net"], "bond_nf": 4}})


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(bonds="explicit", self_cond=True), "self_cond"),
        (dict(bonds="explicit", model="e3nn"), "e3nn"),
        (dict(bonds="explicit", pairing="ot"), "pairing"),
        (dict(bond_weight=2.0), "bond_weight"),
        (dict(bonds="explicit", bond_weight=0.0), "bond_weight"),
        (dict(bonds="aromatic"), "bonds"),
    ],
)
def test_options_refuse_what_explicit_bonds_exclude(kw, match):
    with pytest.raises(ConfigError, match=match):
        molecules.TrainOptions.build(**kw)
