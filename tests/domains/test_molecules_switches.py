"""Issue 31's recipe switches: self-conditioning (selfcond.py), optimal-transport noise pairing and low-noise time
sampling (coupling.py), and the TrainOptions dataclass that carries them. Each switch: the network path stays
E(3)-equivariant, the switch round-trips through config.json, a tiny train + sample runs; default runs keep the
config they always had."""
import json
import math

import pytest
import torch

from gendiff.domains import molecules
from gendiff.domains.molecules import coupling, selfcond
from gendiff.domains.molecules import model as M
from gendiff.domains.molecules.records import molecule_to_data
from gendiff.errors import ConfigError
from gendiff.schedules import get_schedule
from tests._molecules import rotation, random_batch

torch.set_num_threads(1)

SWITCHES = {
    "self_cond": dict(self_cond=True),
    "ot_low_noise": dict(pairing="ot", time_sampling="low_noise"),
    "all": dict(self_cond=True, pairing="ot", time_sampling="low_noise", composition="formula"),
}
TINY = dict(hidden=16, layers=2)


def toy_molecules(n=24, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = ([6, 1, 1, 1, 1], [7, 1, 1, 1], [8, 1, 1])
    mols = []
    for k in range(n):
        z = shapes[k % 3]
        mols.append(molecule_to_data(z, torch.randn(len(z), 3, generator=gen)))
    return mols


@pytest.mark.parametrize("model", ["egnn", "e3nn"])
def test_self_conditioned_network_is_equivariant(model):
    torch.manual_seed(0)
    net_kw = dict(hidden_nf=16, n_layers=2) if model == "egnn" else dict(mul_scalars=8, mul_vectors=4, n_layers=2)
    if model == "e3nn":
        pytest.importorskip("e3nn")
    net = M.build_net(model, self_cond=True, **net_kw).eval()
    assert isinstance(net, selfcond.SelfConditioned)
    x, vec = random_batch()
    est, _ = random_batch(seed=2)
    t = torch.full((x.shape[0],), 0.4)
    rot, shift = rotation(), torch.tensor([0.3, -1.2, 2.0])

    def moved(v, translate=True):
        v = v.clone()
        v[:, :3] = v[:, :3] @ rot.T + (shift if translate else 0)
        return v

    net.x0_hat = est
    out = net(x, t, mask=vec)
    net.x0_hat = moved(est)
    out_rot = net(moved(x), t, mask=vec)
    assert torch.allclose(out_rot[:, :3], out[:, :3] @ rot.T, atol=1e-4)  # positions (a displacement): rotated
    assert torch.allclose(out_rot[:, 3:], out[:, 3:], atol=1e-4)  # features: invariant
    feats = selfcond.sc_features(est, x, vec)
    assert feats.shape == (x.shape[0], selfcond.SC_FEATURES)
    assert torch.allclose(selfcond.sc_features(moved(est), moved(x), vec), feats, atol=1e-4)
    net.x0_hat = None  # no estimate: zeros, the same function as an estimate of all zeros features
    assert torch.equal(selfcond.sc_features(None, x, vec), torch.zeros(x.shape[0], selfcond.SC_FEATURES))


def test_ot_pairing_permutes_whole_molecules_within_sizes():
    space = M.molecule_space()
    x0, vec = random_batch(sizes=(4, 3, 4, 4, 3, 5), seed=3)
    noise = space.sample(x0, vec, torch.Generator().manual_seed(4))
    paired = coupling.ot_pair_noise(x0, noise, vec)

    def blocks(v):
        return [v[vec == g] for g in range(int(vec.max()) + 1)]

    src, dst, xs = blocks(noise), blocks(paired), blocks(x0)
    for block in dst:  # every molecule got some same-size molecule's noise block, whole
        assert any(b.shape == block.shape and torch.equal(b, block) for b in src)
    assert torch.equal(dst[5], src[5])  # the only 5-atom molecule keeps its noise
    assert sorted(b.sum().item() for b in dst) == pytest.approx(sorted(b.sum().item() for b in src))
    cost = sum(((x - e) ** 2).sum() for x, e in zip(xs, dst, strict=True))
    assert cost <= sum(((x - e) ** 2).sum() for x, e in zip(xs, src, strict=True)) + 1e-6
    assert torch.allclose(space.project(paired, vec), paired, atol=1e-6)  # still zero centre of mass


def test_low_noise_times():
    sched = get_schedule("polynomial")
    t = coupling.sample_times(sched, 20000, "low_noise", generator=torch.Generator().manual_seed(0))
    steps = sched.num_train_steps
    assert torch.allclose(t * steps, (t * steps).round(), atol=1e-3) and t.min() >= 1 / steps and t.max() <= 1
    assert t.mean().item() == pytest.approx(1 / 3, abs=0.01)  # density 2 (1 - t): mean 1/3, uniform's is 1/2
    flow = get_schedule("flow")
    tf = coupling.sample_times(flow, 20000, "low_noise", generator=torch.Generator().manual_seed(0))
    assert flow.t_min <= tf.min() and tf.max() <= flow.t_max
    uni = coupling.sample_times(sched, 7, "uniform", generator=torch.Generator().manual_seed(5))
    assert torch.equal(uni, sched.sample_t(7, generator=torch.Generator().manual_seed(5)))
    with pytest.raises(ConfigError, match="time_sampling"):
        coupling.sample_times(sched, 3, "beta")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = {}
    for name, kw in SWITCHES.items():
        run = tmp_path_factory.mktemp(name)
        molecules.train(data=toy_molecules(), out=run, max_steps=3, batch_size=12, lr=1e-3, progress=False,
                        seed=1, **TINY, **kw)
        out[name] = run
    return out


@pytest.mark.parametrize("name", list(SWITCHES))
def test_switch_round_trips_and_samples(trained, name):
    run, kw = trained[name], SWITCHES[name]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["net"].get("self_cond", False) == kw.get("self_cond", False)
    assert cfg["recipe"].get("pairing") == kw.get("pairing")
    assert cfg["recipe"].get("time_sampling", "uniform") == kw.get("time_sampling", "uniform")
    denoiser, _, _, config = molecules.load_run(run, device="cpu")
    assert config == cfg
    assert isinstance(denoiser, selfcond.SelfCondDenoiser) == kw.get("self_cond", False)
    for sampler in ("ancestral", "dpm_solver_pp"):
        mols = molecules.sample(run=run, n=5, sampler=sampler, steps=3, seed=2, progress=False, device="cpu")
        assert len(mols) == 5 and all(torch.isfinite(m.pos).all() for m in mols)
    card = json.loads((run / "card.json").read_text())
    assert card["training"]["steps"] == 3
    with pytest.raises(ConfigError, match="cannot resume"):  # a switch is part of what a resume must match
        flipped = dict(kw, pairing=None if kw.get("pairing") else "ot")
        molecules.train(data=toy_molecules(), out=run, max_steps=4, batch_size=12, progress=False, resume=True,
                        seed=1, **TINY, **flipped)


def test_sampling_feeds_the_previous_estimate(trained):
    denoiser, sched, sizes, _ = molecules.load_run(trained["self_cond"], device="cpu")
    seen = []
    real = denoiser.net.forward

    def spy(x_t, t, *, mask=None, cond=None):
        seen.append(None if denoiser.net.x0_hat is None else denoiser.net.x0_hat.clone())
        return real(x_t, t, mask=mask, cond=cond)

    denoiser.net.forward = spy
    M.sample_molecules(denoiser, sched, 3, torch.tensor([5, 4, 3]), sampler="ancestral", steps=4,
                       generator=torch.Generator().manual_seed(0), progress=False)
    assert seen[0] is None and all(s is not None for s in seen[1:]) and len(seen) >= 4
    assert denoiser.net.x0_hat is None and not denoiser.net.carry  # reset after sampling


def test_self_conditioning_in_training_uses_the_estimate_half_the_time():
    torch.manual_seed(0)
    sched = get_schedule("polynomial")
    den = M.build_denoiser("egnn", sched, "x0", dict(hidden_nf=8, n_layers=1, self_cond=True))
    fed = []
    real = den.net.forward

    def spy(x_t, t, *, mask=None, cond=None):
        fed.append(den.net.x0_hat is not None)
        return real(x_t, t, mask=mask, cond=cond)

    den.net.forward = spy
    from torch_geometric.data import Batch

    batch = Batch.from_data_list(toy_molecules(6))
    step = M.make_step_fn(sched)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss = step(den, batch, gen)
        assert math.isfinite(loss.item())
    # a step with the estimate calls the net twice (no estimate, then with it), one without once
    with_est = sum(fed)
    assert len(fed) == 40 + with_est and 10 <= with_est <= 30
    assert den.net.x0_hat is None


def test_default_recipe_keeps_its_config_and_options_validate():
    assert set(molecules.recipe_config()) == {"weighting", "composition", "ema_decay"}
    opts = molecules.TrainOptions.build(hidden=8, layers=2, max_steps=3, lr=1e-3)
    assert opts.net == {"hidden_nf": 8, "n_layers": 2} and opts.trainer == {"max_steps": 3, "lr": 1e-3}
    assert "self_cond" not in opts.net_config()
    assert opts.recipe() == molecules.recipe_config("clamped_snr", ema_decay=0.999)
    again = molecules.TrainOptions.build(opts, self_cond=True, max_steps=5)
    assert again.net_config()["self_cond"] and again.trainer["max_steps"] == 5 and again.trainer["lr"] == 1e-3
    for bad, match in ((dict(pairing="sinkhorn"), "pairing"), (dict(time_sampling="beta"), "time_sampling"),
                       (dict(model="gcn"), "model"), (dict(colour=1), "unknown"), (dict(max_minutes=0), "max_minutes"),
                       (dict(composition="smiles"), "composition")):
        with pytest.raises(ConfigError, match=match):
            molecules.TrainOptions.build(**bad)


def test_pretrained_config_unchanged_by_the_switches():
    cfg = molecules.read_run(molecules.DEFAULT_PRETRAINED).config
    assert "self_cond" not in cfg["net"] and not {"pairing", "time_sampling"} & set(cfg["recipe"])
    denoiser, *_ = molecules.load_run(molecules.DEFAULT_PRETRAINED, device="cpu")
    assert type(denoiser).__name__ == "Denoiser"
