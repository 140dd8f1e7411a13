"""Molecules recipe switches (issue 11): schedule, prediction, weighting, EDM preconditioning, feature scaling,
composition conditioning, EMA decay. Each: config round-trip, a 2-step train + 2-step sample, and where it can be
written out by hand, the training loss equals the intended objective."""
import json

import pytest
import torch

from gendiff.domains import molecules
from gendiff.domains.molecules import model as M
from gendiff.domains.molecules.data import molecule_to_data
from gendiff.errors import ConfigError
from gendiff.schedules import get_schedule

torch.set_num_threads(1)

METHANE = ([6, 1, 1, 1, 1], [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                             [0.63, -0.63, -0.63]])
AMMONIA = ([7, 1, 1, 1], [[0, 0, 0.1], [0.94, 0, -0.27], [-0.47, 0.81, -0.27], [-0.47, -0.81, -0.27]])
WATER = ([8, 1, 1], [[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]])
TINY = dict(hidden=16, layers=2)

RECIPES = {
    "default": {},
    "eps": dict(prediction="eps", weighting=None),
    "flow": dict(schedule="flow", prediction="velocity"),
    "x0_clamped": dict(prediction="x0", weighting="clamped_snr"),
    "v_min_snr": dict(prediction="v", weighting="min_snr:5"),
    "edm_precond": dict(precondition="edm", sigma_data=0.5),
    "unscaled": dict(feature_scaling=False),
    "formula": dict(composition="formula"),
    "ema": dict(ema_decay=0.9),
}


def toy_molecules(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mols = []
    for k in range(n):
        z, pos = (METHANE, AMMONIA, WATER)[k % 3]
        pos = torch.tensor(pos) + 0.02 * torch.randn(len(z), 3, generator=gen) + torch.randn(3, generator=gen)
        mols.append(molecule_to_data(z, pos))
    return mols


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = {}
    for name, kw in RECIPES.items():
        run = tmp_path_factory.mktemp(name)
        molecules.train(data=toy_molecules(), out=run, max_steps=2, batch_size=8, lr=1e-3, progress=False, **TINY,
                        **kw)
        out[name] = run
    return out


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_round_trip_and_sample(trained, name):
    run, kw = trained[name], RECIPES[name]
    cfg = json.loads((run / "config.json").read_text())
    denoiser, sched, sizes, config = molecules.load_run(run, device="cpu")
    assert config == cfg
    assert sched.name == kw.get("schedule", "polynomial")
    want_pred = "x0" if kw.get("precondition") else kw.get("prediction", molecules.DEFAULT_PREDICTION)
    assert denoiser.prediction == cfg["prediction"] == want_pred
    assert denoiser.precondition == kw.get("precondition")
    if kw.get("precondition"):
        assert denoiser.sigma_data == kw["sigma_data"]
    rec = molecules.recipe(cfg)
    weighting = molecules.auto_weighting(kw.get("weighting", "auto"),
                                         kw.get("prediction", molecules.DEFAULT_PREDICTION), kw.get("precondition"))
    assert rec["weighting"] == M.parse_weighting(weighting)
    if name == "default":  # the measured default recipe: x0 prediction, EQGAT-diff's clamp(SNR, 0.05, 1.5)
        assert (cfg["prediction"], rec["weighting"]) == ("x0", {"name": "clamped_snr", "low": 0.05, "high": 1.5})
    assert rec["norm_values"] == (M.NORM_VALUES if kw.get("feature_scaling", True) else M.UNSCALED)
    assert cfg["recipe"]["ema_decay"] == kw.get("ema_decay", 0.999)
    card = json.loads((run / "card.json").read_text())
    assert card["train_config"]["ema_decay"] == kw.get("ema_decay", 0.999)
    mols = molecules.sample(run=run, n=5, sampler="dpm_solver_pp", steps=2, seed=3, progress=False, device="cpu")
    assert len(mols) == 5 and all(torch.isfinite(m.pos).all() for m in mols)
    assert {m.num_nodes for m in mols} <= {3, 4, 5}
    again = molecules.sample(run=run, n=5, sampler="dpm_solver_pp", steps=2, seed=3, progress=False, device="cpu")
    assert all(torch.equal(a.pos, b.pos) for a, b in zip(mols, again))


def test_weighting_specs():
    assert M.parse_weighting(None) is None and M.parse_weighting("none") is None
    assert M.parse_weighting("min_snr") == {"name": "min_snr", "gamma": 5.0}
    assert M.parse_weighting("min_snr:2.5") == {"name": "min_snr", "gamma": 2.5}
    assert M.parse_weighting("clamped_snr:0.1,2") == {"name": "clamped_snr", "low": 0.1, "high": 2.0}
    assert M.parse_weighting({"name": "snr"}) == {"name": "snr"}
    for bad in ("min_snr:x", "min_snr:1,2", "clamped_snr:1", "snr:3", "huber", "min_snr:-1", "clamped_snr:2,1",
                {"name": "min_snr", "beta": 1}):
        with pytest.raises(ConfigError):
            M.parse_weighting(bad)


def _batch(mols):
    from torch_geometric.data import Batch

    return Batch.from_data_list(mols)


def _by_hand(kind, x0, noise, a, s, sigma_data=0.5):
    """(target, per-element weight) of each objective, written from the papers, not from Denoiser."""
    snr = (a / s) ** 2
    x_t = a * x0 + s * noise
    if kind == "eps":
        return noise, torch.ones_like(a)
    if kind == "eps_min_snr":  # Hang et al. 2023: eps-loss weight min(SNR, 5) / SNR
        return noise, snr.clamp(max=5.0) / snr
    if kind == "x0_clamped":  # EQGAT-diff: x0 loss weighted by clamp(SNR, 0.05, 1.5)
        return x0, snr.clamp(0.05, 1.5)
    if kind == "v":
        return a * noise - s * x0, torch.ones_like(a)
    if kind == "flow":  # x_t = (1 - t) x0 + t eps: u = eps - x0
        return noise - x0, torch.ones_like(a)
    if kind == "edm":  # Karras et al. 2022 table 1 with sigma = s / a on x_t / a
        sig = s / a
        c_skip = sigma_data**2 / (sig**2 + sigma_data**2)
        c_out = sig * sigma_data / (sig**2 + sigma_data**2).sqrt()
        return (x0 - c_skip * x_t / a) / c_out, torch.ones_like(a)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,sched,pred,weighting,precond", [
    ("eps", "polynomial", "eps", None, None),
    ("eps_min_snr", "polynomial", "eps", "min_snr", None),
    ("x0_clamped", "polynomial", "x0", "clamped_snr", None),
    ("v", "polynomial", "v", None, None),
    ("flow", "flow", "velocity", None, None),
    ("edm", "polynomial", "eps", None, "edm"),
])
@pytest.mark.parametrize("scaled", [True, False])
def test_loss_is_the_intended_objective(kind, sched, pred, weighting, precond, scaled):
    schedule = get_schedule(sched)
    torch.manual_seed(0)
    den = M.build_denoiser("egnn", schedule, pred, dict(hidden_nf=16, n_layers=2),
                           options={"precondition": precond, "sigma_data": 0.5} if precond else None)
    norm = M.NORM_VALUES if scaled else M.UNSCALED
    step = M.make_step_fn(schedule, weighting=M.build_weighting(M.parse_weighting(weighting)), norm_values=norm)
    batch = _batch(toy_molecules(6))
    loss = step(den, batch, torch.Generator().manual_seed(7))

    gen = torch.Generator().manual_seed(7)
    x0, vec = M.encode(batch, norm_values=norm)
    if scaled:
        assert torch.allclose(x0[:, 3:8] * 4, batch.x) and torch.allclose(x0[:, 8:] * 10, batch.charge)
    else:
        assert torch.allclose(x0[:, 3:8], batch.x) and torch.allclose(x0[:, 8:], batch.charge)
    B = int(vec.max()) + 1
    t = schedule.sample_t(B, generator=gen)
    noise = M.molecule_space().sample(x0, vec, gen)
    a, s = (v.float()[:, None] for v in schedule.alpha_sigma(t[vec]))
    x_t = a * x0 + s * noise
    target, w = _by_hand(kind, x0, noise, a, s)
    out = den(x_t, t[vec], mask=vec, output="raw")
    per_node = (w * (out - target) ** 2).sum(1)
    per_graph = torch.zeros(B).index_add_(0, vec, per_node) / (torch.bincount(vec) * 9)
    assert torch.allclose(loss, per_graph.mean(), rtol=1e-4), (loss.item(), per_graph.mean().item())


class _Spy(torch.nn.Module):
    """Wraps a network and records the cond it was called with."""

    def __init__(self, net):
        super().__init__()
        self.net, self.conds = net, []

    def forward(self, x, t, *, mask=None, cond=None):
        self.conds.append(cond)
        return self.net(x, t, mask=mask, cond=cond)


def test_formula_conditioning_feeds_the_formula(trained):
    batch = _batch(toy_molecules(6))
    den = M.build_denoiser("egnn", get_schedule("polynomial"), "eps", dict(hidden_nf=16, n_layers=2,
                                                                           context_nf=M.NUM_TYPES))
    den.net = _Spy(den.net)
    M.make_step_fn(den.schedule, composition="formula")(den, batch, torch.Generator().manual_seed(0))
    cond = den.net.conds[-1]
    # H C N O F per graph: CH4, NH3, H2O, ... divided by 10
    assert torch.allclose(cond[:3] * 10, torch.tensor([[4., 1, 0, 0, 0], [3, 0, 1, 0, 0], [2, 0, 0, 1, 0]]))
    with pytest.raises(ConfigError, match="composition"):
        M.make_step_fn(den.schedule, composition="atoms")

    run = trained["formula"]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["recipe"]["formulas"] == {"2,0,0,1,0": 8, "3,0,1,0,0": 8, "4,1,0,0,0": 8}
    assert cfg["net"]["context_nf"] == M.NUM_TYPES
    rec = molecules.recipe(cfg)
    drawn = rec["formulas"].sample(300, torch.Generator().manual_seed(0))
    uniq, freq = torch.unique(drawn, dim=0, return_counts=True)
    assert uniq.tolist() == [[2, 0, 0, 1, 0], [3, 0, 1, 0, 0], [4, 1, 0, 0, 0]] and freq.min() > 70
    assert rec["formulas"].sizes().histogram == pytest.approx({3: 1 / 3, 4: 1 / 3, 5: 1 / 3})


def test_formula_sampling_conditions_each_molecule(trained, monkeypatch):
    """molecules.sample draws formulas, sizes each molecule by its formula and gives the network that formula."""
    seen = []
    real = M.sample_molecules

    def spy(denoiser, schedule, n, counts, **kw):
        seen.append((counts.clone(), kw["cond"].clone()))
        return real(denoiser, schedule, n, counts, **kw)

    monkeypatch.setattr(M, "sample_molecules", spy)
    mols = molecules.sample(run=trained["formula"], n=7, sampler="ddim", steps=2, progress=False, device="cpu",
                            batch_size=3)
    counts, cond = seen[0]
    assert torch.equal((cond * 10).round().sum(1).long(), counts)
    assert [m.num_nodes for m in mols] == counts.tolist()


def test_unscaled_features_decode(trained):
    x0, vec = M.encode(_batch(toy_molecules(3)), norm_values=M.UNSCALED)
    mols = M.decode(x0, vec, M.UNSCALED)
    assert [m.z.tolist() for m in mols] == [[6, 1, 1, 1, 1], [7, 1, 1, 1], [8, 1, 1]]
    assert mols[0].charge.flatten().tolist() == [6, 1, 1, 1, 1]
    wrong = M.decode(x0, vec)  # undone with EDM's scales: charges 10x too large
    assert wrong[0].charge.flatten().tolist() == [60, 10, 10, 10, 10]
    with pytest.raises(ConfigError, match="norm_values"):
        M.encode(_batch(toy_molecules(3)), norm_values=(1, 0, 1))


def test_bad_recipes_and_resume(trained, tmp_path):
    mols = toy_molecules(6)
    with pytest.raises(ConfigError, match="alpha = 0"):
        molecules.train(data=mols, out=tmp_path / "a", schedule="flow", prediction="eps", max_steps=1,
                        progress=False, **TINY)
    with pytest.raises(ConfigError, match="weighting"):
        molecules.train(data=mols, out=tmp_path / "b", weighting="huber", max_steps=1, progress=False, **TINY)
    with pytest.raises(ConfigError, match="composition"):
        molecules.train(data=mols, out=tmp_path / "c", composition="atoms", max_steps=1, progress=False, **TINY)
    with pytest.raises(ConfigError, match="prediction"):
        molecules.train(data=mols, out=tmp_path / "d", prediction="score", max_steps=1, progress=False, **TINY)
    run = trained["x0_clamped"]
    with pytest.raises(ConfigError, match="cannot resume the recipe"):
        molecules.train(data=toy_molecules(), out=run, prediction="x0", weighting="min_snr", resume=True,
                        max_steps=3, batch_size=8, progress=False, **TINY)
    with pytest.raises(ConfigError, match="cannot resume the recipe"):
        molecules.train(data=toy_molecules(), out=run, prediction="eps", weighting="clamped_snr", resume=True,
                        max_steps=3, batch_size=8, progress=False, **TINY)
    molecules.train(data=toy_molecules(), out=run, prediction="x0", weighting="clamped_snr", resume=True,
                    max_steps=3, batch_size=8, progress=False, **TINY)
    assert json.loads((run / "card.json").read_text())["training"]["steps"] == 3


def test_cli_recipe_flags(tmp_path, capsys):
    from gendiff.cli import main

    xyz = tmp_path / "mols.xyz"
    molecules.write_molecules(xyz, toy_molecules(6))
    out = tmp_path / "run"
    code = main(["train", "molecules", "--data", str(xyz), "--out", str(out), "--max-steps", "2", "--batch-size",
                 "4", "--hidden", "16", "--layers", "2", "--schedule", "flow", "--prediction", "x0", "--weighting",
                 "min_snr:3", "--no-feature-scaling", "--composition", "formula", "--ema-decay", "0.5",
                 "--warmup-steps", "1", "--lr-decay", "cosine", "--lr-final", "0.2"])
    assert code == 0
    train_cfg = json.loads((out / "card.json").read_text())["train_config"]
    assert (train_cfg["lr_decay"], train_cfg["lr_final"], train_cfg["warmup_steps"]) == ("cosine", 0.2, 1)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["schedule"]["name"] == "flow" and cfg["prediction"] == "x0"
    assert cfg["recipe"]["weighting"] == {"name": "min_snr", "gamma": 3.0} and cfg["recipe"]["ema_decay"] == 0.5
    assert cfg["features"]["norm_values"] == [1.0, 1.0, 1.0] and cfg["recipe"]["composition"] == "formula"
    code = main(["train", "molecules", "--data", str(xyz), "--out", str(tmp_path / "p"), "--max-steps", "1",
                 "--batch-size", "4", "--hidden", "16", "--layers", "2", "--precondition", "edm", "--sigma-data",
                 "0.7"])
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    assert code == 0 and cfg["denoiser"]["precondition"] == "edm" and cfg["denoiser"]["sigma_data"] == 0.7
    capsys.readouterr()
    try:
        code = main(["train", "molecules", "--data", str(xyz), "--out", str(tmp_path / "q"), "--weighting",
                     "min_snr:x"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "gendiff: error:" in err and "min_snr:x" in err


def test_init_warm_starts_from_a_run_and_keeps_the_card_cumulative(trained, tmp_path):
    from safetensors.torch import load_file

    src = trained["default"]
    out = tmp_path / "cont"
    # one step at lr 1e-12 moves each weight by about 1e-12 (Adam's step is ~lr): the loaded weights come back
    molecules.train(data=toy_molecules(), out=out, init=src, max_steps=1, batch_size=8, lr=1e-12, progress=False,
                    ema_decay=0.0, **TINY)
    before, after = load_file(str(src / "weights.safetensors")), load_file(str(out / "weights.safetensors"))
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], rtol=0, atol=1e-9) for k in before)
    fresh = tmp_path / "fresh"  # and without init the same call starts elsewhere (the check above can fail)
    molecules.train(data=toy_molecules(), out=fresh, seed=1, max_steps=1, batch_size=8, lr=1e-12, progress=False,
                    ema_decay=0.0, **TINY)
    other = load_file(str(fresh / "weights.safetensors"))
    assert not all(torch.allclose(before[k], other[k], rtol=0, atol=1e-9) for k in before)
    card, old = (json.loads((d / "card.json").read_text()) for d in (out, src))
    assert card["training"]["steps"] == old["training"]["steps"] + 1
    assert len(card["training"]["sittings"]) == len(old["training"]["sittings"]) + 1
    assert card["training"]["sittings"][-1]["initialised_from"]["steps"] == old["training"]["steps"]
    assert card["training"]["cpu_seconds"] >= old["training"]["cpu_seconds"]
    with pytest.raises(ConfigError, match="init run has"):
        molecules.train(data=toy_molecules(), out=tmp_path / "bad", init=src, hidden=8, layers=2, max_steps=1,
                        batch_size=8, progress=False)
    with pytest.raises(ConfigError, match="init run has"):  # formulas as context: another network and sampler
        molecules.train(data=toy_molecules(), out=tmp_path / "bad2", init=src, composition="formula", max_steps=1,
                        batch_size=8, progress=False, **TINY)
    # fine-tuning with another loss weighting and time sampling is a warm start's business (not a resume's)
    tuned = tmp_path / "tuned"
    molecules.train(data=toy_molecules(), out=tuned, init=src, weighting="min_snr", time_sampling="low_noise",
                    max_steps=1, batch_size=8, progress=False, **TINY)
    recipe = json.loads((tuned / "config.json").read_text())["recipe"]
    assert recipe["time_sampling"] == "low_noise" and recipe["weighting"]["name"] == "min_snr"
    with pytest.raises(ConfigError, match="cannot resume the recipe"):
        molecules.train(data=toy_molecules(), out=tuned, resume=True, max_steps=2, batch_size=8, progress=False,
                        **TINY)
    with pytest.raises(ConfigError, match="resume=True"):
        molecules.train(data=toy_molecules(), out=trained["x0_clamped"], init=src, max_steps=1, batch_size=8,
                        progress=False, **TINY)
