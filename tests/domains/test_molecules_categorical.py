"""Categorical atom (and bond) types (types='categorical', categorical.py / catsampling.py): the forward
corruption's marginals, the D3PM posterior against brute-force Bayes, the categorical head's E(3) and permutation
equivariance, the loss (core diffusion loss + weighted cross-entropy), a tiny train + sample on QM9 that a seed
reproduces, the config round trip, Gaussian runs left as they were, the refusals, and the same for explicit bonds."""
import json

import pytest
import torch

from gendiff.domains import molecules
from gendiff.domains.molecules import categorical as C
from gendiff.domains.molecules import catsampling as S
from gendiff.domains.molecules import model as M
from gendiff.domains.molecules.records import ATOMIC_NUMBERS
from gendiff.errors import ConfigError
from gendiff.schedules import get_schedule
from tests._molecules import rotation, random_batch

torch.set_num_threads(1)
TINY = dict(hidden=16, layers=2)
M5 = torch.tensor([0.5, 0.3, 0.1, 0.1, 0.0])  # a marginal with an impossible class (F)
SPEC = C.Categorical(tuple(M5.tolist()))
BONDS = molecules.runconfig.bonds_config("explicit")


def _q(a: float, m: torch.Tensor) -> torch.Tensor:
    """Q = a I + (1 - a) 1 m^T: row = from-class, column = to-class."""
    k = m.numel()
    return a * torch.eye(k, dtype=torch.float64) + (1 - a) * m.double().expand(k, k)


def _state(sizes=(5, 4, 3), seed=1):
    """A categorical state: zero-CoM positions, exact one-hot types / 4 and charges / 10."""
    gen = torch.Generator().manual_seed(seed)
    x, vec = random_batch(sizes, generator=gen)
    types = torch.randint(0, 4, (vec.numel(),), generator=gen)
    return S.with_classes(x, vec, SPEC, types), vec


def test_corruption_marginals_at_the_ends_and_in_the_middle():
    gen = torch.Generator().manual_seed(0)
    clean = torch.tensor([1, 3]).repeat(20000)  # C and O
    for abar in (1.0, 0.0, 0.37):
        got = C.corrupt(clean, torch.full((clean.numel(),), abar), M5, gen)
        for k0 in (1, 3):
            freq = torch.bincount(got[clean == k0], minlength=5).double() / (clean == k0).sum()
            want = abar * torch.nn.functional.one_hot(torch.tensor(k0), 5).double() + (1 - abar) * M5.double()
            assert torch.allclose(freq, want, atol=0.012), (abar, k0, freq, want)
    assert torch.equal(C.corrupt(clean, torch.ones(clean.numel()), M5, gen), clean)


def test_training_noise_makes_the_discrete_x_t_through_q_sample():
    from gendiff.forward import q_sample

    sched = get_schedule("polynomial")
    x0, vec = _state()
    space = M.molecule_space()
    t = torch.tensor([0.001, 0.5, 1.0])
    noise, (atoms, pairs) = C.training_noise(x0, vec, t, sched, space, SPEC, torch.Generator().manual_seed(2))
    x_t = q_sample(x0, space.per_row(t, vec), noise, sched)
    c_t = x_t[:, 3:8].argmax(-1)
    assert pairs is None and torch.equal(atoms, x0[:, 3:8].argmax(-1))
    assert torch.allclose(x_t[:, 3:], SPEC.atom_columns(c_t, x_t), atol=1e-5)  # exact one-hot / 4, Z / 10
    assert torch.equal(c_t[vec == 0], atoms[vec == 0])  # t = 0.001: abar ~ 1
    assert torch.isfinite(noise).all() and torch.allclose(noise[:, :3], space.sample(
        x0, vec, torch.Generator().manual_seed(2))[:, :3])  # positions: the space's own noise


def test_posterior_is_bayes_and_rows_are_distributions():
    gen = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(8, 5, generator=gen), -1)
    c_t = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    abar_t, abar_s = 0.3, 0.65
    post = C.posterior(p, c_t, M5, abar_t, abar_s)
    assert torch.allclose(post.sum(-1), torch.ones(8)) and (post >= 0).all()
    q_s, q_ts, q_t = _q(abar_s, M5), _q(abar_t / abar_s, M5), _q(abar_t, M5)
    brute = torch.zeros(8, 5, dtype=torch.float64)
    for r in range(8):
        for k in range(5):
            if q_t[k, c_t[r]] > 0:  # p(c_s | c_t, k) = q(c_s | k) q(c_t | c_s) / q(c_t | k), weighted by p_k
                brute[r] += p[r, k] * q_s[k] * q_ts[:, c_t[r]] / q_t[k, c_t[r]]
        brute[r] /= brute[r].sum()
    assert torch.allclose(post.double(), brute, atol=1e-6)
    for k in range(4):  # a one-hot p is q(c_s | c_t, c_0 = k)
        one = torch.nn.functional.one_hot(torch.full((8,), k), 5).float()
        want = q_s[k] * q_ts[:, c_t].T / q_t[k, c_t].unsqueeze(-1)
        assert torch.allclose(C.posterior(one, c_t, M5, abar_t, abar_s).double(), want, atol=1e-6)
    assert torch.allclose(C.posterior(p, c_t, M5, abar_t, 1.0), p, atol=1e-6)  # s = 0: c_0 ~ p
    stuck = C.posterior(p, torch.full((8,), 4), M5, abar_t, abar_s)  # c_t = F, m_F = 0: only c_0 = F could give it
    assert torch.allclose(stuck, torch.nn.functional.one_hot(torch.full((8,), 4), 5).float(), atol=1e-6)
    assert torch.allclose(C.posterior(p, c_t, M5, 0.0, 0.4), 0.4 * p + 0.6 * M5, atol=1e-6)  # from pure noise


def test_posterior_and_draws_stay_on_the_device():
    p = torch.full((4, 5), 0.2, device="meta")
    post = C.posterior(p, torch.zeros(4, dtype=torch.long, device="meta"), M5.to("meta"), 0.2, 0.5)
    assert post.device.type == "meta" and C.draw(post).device.type == "meta"
    x, vec = torch.zeros(6, M.STATE_DIM, device="meta"), torch.zeros(6, dtype=torch.long, device="meta")
    assert S.prior(x, vec, SPEC).device.type == "meta"


def _head(seed=0, bonds=False):
    torch.manual_seed(seed)
    kw = dict(hidden_nf=16, n_layers=2, categorical={"type_norm": 4.0, "charge_norm": 10.0})
    return M.build_net("egnn", **kw, **(dict(bond_nf=4) if bonds else {})).eval()


def test_head_is_equivariant_and_gives_probabilities():
    net = _head()
    x, vec = _state()
    t = torch.full((x.shape[0],), 0.4)
    rot, shift = rotation(), torch.tensor([0.4, -1.0, 2.5])
    moved = x.clone()
    moved[:, :3] = moved[:, :3] @ rot.T + shift
    out, out_moved = net(x, t, mask=vec), net(moved, t, mask=vec)
    assert torch.allclose(out_moved[:, :3], out[:, :3] @ rot.T, atol=1e-4)
    assert torch.allclose(out_moved[:, 3:], out[:, 3:], atol=1e-4)
    p = out[:, 3:8] * 4
    assert torch.allclose(p.sum(-1), torch.ones(len(p)), atol=1e-5) and (p > 0).all()
    assert torch.allclose(out[:, 8] * 10, p @ torch.tensor(ATOMIC_NUMBERS, dtype=torch.float32), atol=1e-4)
    perm = torch.tensor([3, 0, 4, 1, 2, 7, 5, 8, 6, 11, 9, 10])  # atoms permuted within their molecules
    assert torch.allclose(net(x[perm], t, mask=vec[perm]), out[perm], atol=1e-4)
    den = M.build_denoiser("egnn", get_schedule("polynomial"), "x0", dict(hidden_nf=16, n_layers=2, categorical={
        "type_norm": 4.0, "charge_norm": 10.0}))
    x0 = den.x0(x, t)  # the Denoiser's x0 is the head's output, exactly
    assert torch.equal(x0, den.net(x / den.coefficients(x, t)[0].pow(2).add(den.coefficients(x, t)[1].pow(2))
                                   .sqrt(), t))


def test_loss_is_the_core_loss_plus_weighted_cross_entropy():
    from torch_geometric.data import Batch

    from gendiff.domains.molecules.records import molecule_to_data

    mols = [molecule_to_data(z, torch.randn(len(z), 3, generator=torch.Generator().manual_seed(k)))
            for k, z in enumerate(([6, 1, 1, 1, 1], [7, 1, 1, 1], [8, 1, 1]))]
    batch = Batch.from_data_list(mols)
    sched = get_schedule("polynomial")
    den = M.build_denoiser("egnn", sched, "x0", dict(hidden_nf=8, n_layers=1, categorical={
        "type_norm": 4.0, "charge_norm": 10.0}))
    w = M.build_weighting(M.parse_weighting("clamped_snr"))
    losses = []
    for weight in (1e-9, 1.0, 3.0):
        types = molecules.runconfig.types_config("categorical", weight, M5.tolist())
        step = M.make_step_fn(sched, weighting=w, types=types)
        losses.append(step(den, batch, torch.Generator().manual_seed(0)).item())
    ce = losses[1] - losses[0]
    assert ce > 0 and losses[2] == pytest.approx(losses[0] + 3 * ce, rel=1e-5)
    assert C.head(den).logits is None and not C.head(den).capture


@pytest.fixture(scope="module")
def cat_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("categorical")
    molecules.train(data="qm9", limit=24, out=run, types="categorical", max_steps=3, batch_size=8, lr=1e-3,
                    progress=False, seed=1, **TINY)
    return run


def test_categorical_run_round_trips_and_samples_reproducibly(cat_run, tmp_path):
    cfg = json.loads((cat_run / "config.json").read_text())
    types = cfg["recipe"]["types"]
    assert types["mode"] == "categorical" and types["weight"] == C.TYPE_WEIGHT and "bond_marginals" not in types
    assert sum(types["marginals"]) == pytest.approx(1) and types["marginals"][0] > 0.4  # QM9: mostly H
    assert cfg["net"]["categorical"] == {"type_norm": 4.0, "charge_norm": 10.0} and cfg["prediction"] == "x0"
    denoiser, _, _, config = molecules.load_run(cat_run, device="cpu")
    assert config == cfg and isinstance(denoiser.net, C.CategoricalHead)
    assert molecules.recipe(cfg)["types"] == types
    sizes = [4, 6, 5]
    for sampler in S.SAMPLERS:
        a, b = (molecules.sample(run=cat_run, n=3, sampler=sampler, steps=4, seed=7, progress=False, device="cpu")
                for _ in range(2))
        for m1, m2 in zip(a, b, strict=True):
            assert torch.equal(m1.pos, m2.pos) and torch.equal(m1.z, m2.z)
            assert torch.equal(m1.x.sum(-1), torch.ones(m1.num_nodes)) and set(m1.x.unique().tolist()) <= {0.0, 1.0}
            assert torch.equal(m1.charge.flatten().long(), m1.z)
    assert len(a) == 3 and all(m.num_nodes >= 1 for m in a)
    got = M.sample_molecules(denoiser, molecules.load_run(cat_run, device="cpu")[1], 3, torch.tensor(sizes),
                             steps=3, generator=torch.Generator().manual_seed(0), progress=False, types=types)
    assert [m.num_nodes for m in got] == sizes
    molecules.write_molecules(tmp_path / "gen.sdf", got)
    assert len(molecules.io.read_sdf(tmp_path / "gen.sdf")) == 3
    assert "molecule_stability" in molecules.evaluate(molecules=got)
    with pytest.raises(ConfigError, match="heun"):
        molecules.sample(run=cat_run, n=2, sampler="heun", steps=3, progress=False, device="cpu")
    with pytest.raises(ConfigError, match="cannot resume"):
        molecules.train(data="qm9", limit=24, out=cat_run, max_steps=4, batch_size=8, progress=False, resume=True,
                        seed=1, **TINY)


def test_gaussian_runs_keep_their_config():
    opts = molecules.TrainOptions.build(**TINY)
    assert "types" not in opts.recipe() and "categorical" not in opts.net_config()
    assert molecules.runconfig.types_config("gaussian") is None
    cfg = molecules.read_run(molecules.DEFAULT_PRETRAINED).config
    assert "types" not in cfg["recipe"] and molecules.recipe(cfg)["types"] is None


@pytest.mark.parametrize("kw,match", [
    (dict(types="bogus"), "bogus"),
    (dict(types="categorical", prediction="eps"), "prediction eps"),
    (dict(types="categorical", precondition="edm"), "precondition"),
    (dict(types="categorical", self_cond=True), "self_cond"),
    (dict(types="categorical", pairing="ot"), "pairing"),
    (dict(type_weight=1.0), "type_weight"),
    (dict(types="categorical", type_weight=-1.0), "type_weight"),
])
def test_options_refuse_what_categorical_types_exclude(kw, match):
    with pytest.raises(ConfigError, match=match) as err:
        molecules.TrainOptions.build(**kw)
    assert "\n" not in str(err.value)


def test_stored_types_are_checked():
    types = molecules.runconfig.types_config("categorical", marginals=M5.tolist())
    assert molecules.runconfig.check_types(types) == types
    with pytest.raises(ConfigError, match="marginals"):
        molecules.runconfig.check_types({**types, "marginals": [0.5, 0.5, 0.5, 0, 0]})
    with pytest.raises(ConfigError, match="bond_marginals"):
        molecules.runconfig.check_types(types, BONDS)
    with pytest.raises(ConfigError, match="heun"):
        S.check_sampler("heun")


def test_bond_classes_are_categorical_and_symmetric():
    net = _head(bonds=True)
    spec = C.Categorical(tuple(M5.tolist()), (0.7, 0.2, 0.07, 0.03), bond_weight=2.0)
    vec = torch.repeat_interleave(torch.arange(2), torch.tensor([4, 3]))
    g = M.bond_graph(vec, BONDS)
    gen = torch.Generator().manual_seed(0)
    like = torch.zeros(g.num_rows, M.STATE_DIM)
    like[: g.num_nodes, :3] = M.ZeroCoMSpace().project(torch.randn(g.num_nodes, 3, generator=gen), vec)
    x = S.prior(like, g, spec, gen)
    nodes, pairs = g.split(x)
    assert torch.allclose(pairs.sum(-1) * 4, torch.ones(g.num_pairs)) and (x[g.num_nodes :, 4:] == 0).all()
    out = net(x, torch.full((g.num_rows,), 0.5), mask=g)
    _, p = g.split(out)
    assert torch.allclose(p.sum(-1) * 4, torch.ones(g.num_pairs), atol=1e-5)
    perm = torch.tensor([2, 0, 3, 1, 5, 6, 4])
    g2 = M.bond_graph(vec[perm], BONDS)
    dense = torch.zeros(7, 7, 4)
    dense[g.pair_i, g.pair_j] = pairs
    dense[g.pair_j, g.pair_i] = pairs
    dense = dense[perm][:, perm]
    x2 = g2.pack(nodes[perm], dense[g2.pair_i, g2.pair_j])
    out2 = net(x2, torch.full((g2.num_rows,), 0.5), mask=g2)
    d_out = torch.zeros(7, 7, 4)
    d_out[g.pair_i, g.pair_j] = p
    d_out[g.pair_j, g.pair_i] = p
    assert torch.allclose(g2.split(out2)[1], d_out[perm][:, perm][g2.pair_i, g2.pair_j], atol=1e-4)
    counts = torch.zeros(4)
    for seed in range(40):  # the pairs' prior is the bond marginal, one draw per unordered pair
        counts += torch.bincount(g.split(S.prior(like, g, spec, torch.Generator().manual_seed(seed)))[1]
                                 .argmax(-1), minlength=4)
    assert torch.allclose(counts / counts.sum(), torch.tensor(spec.bond_marginals), atol=0.06)


def test_categorical_bond_run_trains_and_samples(tmp_path):
    pytest.importorskip("rdkit.Chem")
    from gendiff.domains.molecules.records import carried_bonds

    run = tmp_path / "run"
    molecules.train(data="qm9", limit=16, out=run, types="categorical", bonds="explicit", max_steps=2, batch_size=8,
                    lr=1e-3, progress=False, seed=1, **TINY)
    types = json.loads((run / "config.json").read_text())["recipe"]["types"]
    assert sum(types["bond_marginals"]) == pytest.approx(1) and types["bond_marginals"][0] > 0.5  # mostly none
    mols = molecules.sample(run=run, n=3, steps=3, seed=2, progress=False, device="cpu")
    again = molecules.sample(run=run, n=3, steps=3, seed=2, progress=False, device="cpu")
    for mol, other in zip(mols, again, strict=True):
        bonds = carried_bonds(mol)
        assert bonds == carried_bonds(other) and torch.equal(mol.z, other.z)
        assert all(0 <= i < j < mol.num_nodes and 1 <= o <= 3 for i, j, o in bonds)


class _FixedLogits(torch.nn.Module):
    """A stand-in network: zero position output, the same type logits for every atom."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, x_t, t, *, mask=None, cond=None):
        out = torch.zeros_like(x_t)
        out[:, 3:8] = self.logits
        return out


class _Bayes(torch.nn.Module):
    """The exact denoiser of types drawn i.i.d. from m: p(c_0 = k | c_t) proportional to m_k q(c_t | c_0 = k)."""

    def __init__(self, sched, m):
        super().__init__()
        self.sched, self.m = sched, torch.tensor(m)

    def forward(self, x_t, t, *, mask=None, cond=None):
        abar = self.sched.alpha_sigma(t)[0].float().pow(2).unsqueeze(-1)
        onehot = torch.nn.functional.one_hot(x_t[:, 3:8].argmax(-1), 5).float()
        like = abar * onehot + (1 - abar) * (onehot @ self.m).unsqueeze(-1)  # q(c_t | k) over k
        out = torch.zeros_like(x_t)
        out[:, 3:8] = (self.m * like).clamp(min=1e-30).log()
        return out


def _fixed_denoiser(logits, sched):
    from gendiff.forward import Denoiser

    return Denoiser(C.CategoricalHead(_FixedLogits(logits)), sched, prediction="x0")


def test_sampler_chain_reaches_the_predicted_types_and_keeps_the_marginal():
    from gendiff.sampler_steps import SINGLE_CALL_STEPS

    sched, space = get_schedule("polynomial"), M.molecule_space()
    vec = torch.repeat_interleave(torch.arange(100), 20)
    like = torch.zeros(vec.numel(), M.STATE_DIM)
    spec = C.Categorical((0.5, 0.3, 0.1, 0.1, 0.0))
    x_T = S.prior(like, vec, spec, torch.Generator().manual_seed(0))
    sure = _fixed_denoiser([-9.0, 9.0, -9.0, -9.0, -9.0], sched)  # certain every atom is C
    out = S.sample(spec, "ancestral", sure, x_T, sched, space, 6, mask=vec, generator=torch.Generator().manual_seed(1))
    assert (out[:, 3:8].argmax(-1) == 1).all()
    from gendiff.forward import Denoiser

    exact = Denoiser(C.CategoricalHead(_Bayes(sched, spec.marginals)), sched, prediction="x0")
    for name in ("ancestral", "ddim"):  # with the exact posterior the reverse chain ends at the data's marginal
        out = S.sample(spec, name, exact, x_T, sched, space, 8, mask=vec, generator=torch.Generator().manual_seed(2),
                       spacing="uniform")
        freq = torch.bincount(out[:, 3:8].argmax(-1), minlength=5).float() / vec.numel()
        assert torch.allclose(freq, torch.tensor(spec.marginals), atol=0.03), (name, freq)
    blind = _fixed_denoiser(torch.tensor(spec.marginals).clamp(min=1e-12).log(), sched)
    # one hybrid step moves the positions exactly as the core ancestral step (same draws first)
    from gendiff.sampler_loop import Context

    x = x_T.clone()
    x[:, :3] = space.sample(x, vec, torch.Generator().manual_seed(3))[:, :3]
    ctx_a = Context(blind, sched, space, vec, generator=torch.Generator().manual_seed(4))
    ctx_b = Context(blind, sched, space, vec, generator=torch.Generator().manual_seed(4))
    hybrid = S.hybrid_step("ancestral", spec)(ctx_a, x, 0.6, 0.5, {"i": 0, "n": 2})
    core = SINGLE_CALL_STEPS["ancestral"](ctx_b, x, 0.6, 0.5, {"i": 0, "n": 2})
    assert torch.equal(hybrid[:, :3], core[:, :3]) and ctx_a.nfe == 1
    assert torch.equal(hybrid[:, 3:], S.finalize(hybrid, vec, spec)[:, 3:])  # the types stay exact one-hots


def test_cli_trains_and_samples_categorical_types(tmp_path, capsys):
    from gendiff.cli import main

    run, out = tmp_path / "run", tmp_path / "gen.xyz"
    assert main(["train", "molecules", "--data", "qm9", "--limit", "16", "--types", "categorical", "--type-weight",
                 "0.2", "--out", str(run), "--max-steps", "2", "--hidden", "8", "--layers", "1", "--batch-size",
                 "8"]) == 0
    assert json.loads((run / "config.json").read_text())["recipe"]["types"]["weight"] == 0.2
    assert main(["sample", "molecules", "--run", str(run), "--n", "2", "--steps", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "molecules", "--run", str(run), "--n", "2", "--steps", "3", "--sampler", "ddim",
                 "--json"]) == 0
    assert "molecule_stability" in json.loads(capsys.readouterr().out)
