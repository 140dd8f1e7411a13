"""The shipped molecules model `pretrained:qm9`: safetensors + JSON only, loads strictly, its network outputs are
pinned (a change to network code that breaks the checkpoint fails here), 100 samples pass a quality floor taken
from its card, and broken copies (truncated weights, a config that does not fit them, an older run format) fail
with one line `gendiff: error:` naming the file."""
import json
import math
import shutil

import pytest
import torch

from gendiff import runs
from gendiff.domains import molecules

torch.set_num_threads(1)
PRE = "pretrained:qm9"

# eps predictions of pretrained:qm9 on a fixed input (fingerprint() below), written when the model was exported;
# a network-code change that alters what the shipped weights compute moves these beyond the tolerance
PINNED = [
    [-1.209608, -1.340279, -0.701623, -1.253917, 2.02161, 1.474115, -0.743635, -5.241158, -0.356825],
    [-0.745714, 0.174244, -0.237123, -0.098503, 2.84125, 2.65931, -0.581385, -3.260858, -4.632794],
    [0.827324, 0.466527, -0.153886, -3.832753, -0.880404, 4.090296, 1.800272, -1.434608, -1.755573],
    [0.071101, 0.751974, 0.878522, 1.777039, -2.037422, -1.488319, 0.040697, -1.185629, 0.263652],
    [1.056897, -0.052466, 0.21411, 0.901044, -0.45917, 1.76528, -0.726241, 0.125729, 0.191041],
    [1.68263, -0.290627, -0.952506, -0.826715, 0.972877, 1.191372, 0.182739, -0.270306, -0.759516],
    [0.347615, 0.507216, -0.02568, 0.854736, 1.707036, 3.900713, -1.790397, -1.436979, 1.743817],
    [-0.417017, 0.177546, 1.069317, 1.258194, 1.442993, -1.74358, 2.953584, -0.552335, 0.0631],
    [-1.221145, 0.188188, -0.107241, -0.617821, -1.282946, 1.25309, -0.186562, 0.934168, -0.429319],
    [0.415045, 0.096485, 0.353165, 0.963695, -0.514969, 1.162542, 0.382947, -0.28982, 2.301362],
    [-1.486365, 0.701738, -0.659851, -1.143083, -0.000796, 0.786411, 1.878646, -1.584632, 0.059221],
    [0.130741, -1.50668, -1.021451, -0.296758, 0.277495, 0.249073, 0.06157, 0.390038, 0.194168],
    [0.279728, 0.003449, 0.835876, -0.874111, -1.084153, -0.524317, -0.961566, 0.65522, 0.36626],
    [0.268768, 0.122687, 0.508371, -0.127786, 0.068802, -0.718237, -1.460813, -0.120101, -1.505714],
]


def fingerprint(denoiser) -> torch.Tensor:
    """eps of the denoiser for two molecules (5 and 9 atoms) of fixed noise at t = 0.3 and 0.7, on the CPU."""
    from gendiff.domains.molecules.model import STATE_DIM, molecule_space

    gen = torch.Generator().manual_seed(0)
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor([5, 9]))
    x = molecule_space().project(torch.randn(14, STATE_DIM, generator=gen), batch)
    with torch.no_grad():
        return denoiser(x, torch.tensor([0.3, 0.7])[batch], mask=batch).float()


def _measured(card: dict) -> dict:
    """The card's measured metrics block (its headline is a list of metric names, looked up in these blocks)."""
    blocks = [b for b in card["metrics"].values() if isinstance(b, dict) and "atom_stability" in b]
    assert blocks, card["metrics"]
    return blocks[0]


@pytest.fixture(scope="module")
def shipped():
    return molecules.read_run(PRE)


def test_shipped_files_are_safetensors_and_json(shipped):
    names = sorted(p.name for p in shipped.path.iterdir())
    assert names == ["card.json", "config.json", "weights.safetensors"], names
    assert sum(p.stat().st_size for p in shipped.path.iterdir()) < 3e6
    card = shipped.card
    assert card["domain"] == "molecules" and card["training"]["steps"] > 0
    assert card["training"]["cpu_seconds"] > 0 and card["training"]["command"] and card["training"]["commit"]
    head = _measured(card)
    for key in ("atom_stability", "molecule_stability", "validity", "connected_validity", "uniqueness",
                "sample_seconds", "sampler", "steps", "n", "command"):
        assert key in head, key
    assert head["command"].startswith("gendiff evaluate molecules --run pretrained:qm9")


def test_loads_strictly_and_outputs_are_pinned():
    denoiser, sched, sizes, cfg = molecules.load_run(PRE, device="cpu")
    assert cfg["format"] == runs.FORMAT and cfg["features"] == molecules.features_config()
    out = fingerprint(denoiser)
    assert torch.isfinite(out).all()
    assert PINNED is not None, "PINNED not filled in"
    assert torch.allclose(out, torch.tensor(PINNED), atol=1e-4, rtol=1e-4), (out - torch.tensor(PINNED)).abs().max()


def test_quality_floor_from_the_card(shipped):
    """Atom stability of 100 samples (the card's sampler and steps, seed 0) >= the card's figure minus a margin.

    Margin: the card measures p on n_card molecules; the test on 100. Per molecule, the fraction of stable atoms
    f_i lies in [0, 1], so Var(f_i) <= p(1 - p) (the binomial bound, conservative: atoms of one molecule are
    correlated, which the per-molecule average absorbs). The difference of the two means has a standard error
    <= sqrt(p(1-p) (1/100 + 1/n_card)); the floor is 4 such standard errors below the card (a false failure
    < 1e-4 for a model that has not changed; with the fixed seed the test is deterministic on one platform, and the
    margin covers other platforms' arithmetic). A model 4 SE worse (about 0.2 atom stability at p = 0.5) fails."""
    head = _measured(shipped.card)
    p, n_card = head["atom_stability"], head["n"]
    margin = 4.0 * math.sqrt(max(p * (1 - p), 0.0025) * (1 / 100 + 1 / n_card))
    metrics, mols = molecules.measure(PRE, n=100, sampler=head["sampler"], steps=head["steps"], seed=0,
                                      spacing=head.get("spacing", molecules.DEFAULT_SPACING), device="cpu")
    assert len(mols) == 100
    assert metrics["atom_stability"] >= p - margin, (metrics, p, margin)
    assert 0.0 <= metrics["connected_validity"] <= metrics["validity"] <= 1.0


def test_one_default_sampler_scored_on_the_card(shipped):
    """sample, evaluate and demo (CLI and Python) share one default sampler, and the shipped card carries its score
    on 10,000 samples (the issue's bar is measured with the sampler a user gets)."""
    import inspect

    from gendiff.cli import build_parser

    default = (molecules.DEFAULT_SAMPLER, molecules.DEFAULT_SPACING, molecules.DEFAULT_STEPS)
    parser = build_parser()
    for argv in (["sample", "molecules", "--run", PRE, "--out", "m.sdf"], ["evaluate", "molecules", "--run", PRE],
                 ["demo", "molecules", "--out", "d"]):
        args = parser.parse_args(argv)
        assert (args.sampler, args.spacing, args.steps) == default, argv
    for fn in (molecules.measure, molecules.demo):
        params = inspect.signature(fn).parameters
        assert tuple(params[k].default for k in ("sampler", "spacing", "steps")) == default, fn.__name__
    params = inspect.signature(molecules.sample).parameters
    assert (params["sampler"].default, params["steps"].default) == default[::2]
    assert "%s-%s-%d-n10000" % default in shipped.card["metrics"], sorted(shipped.card["metrics"])


def _cli(capsys, *args):
    from gendiff.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error_line(code, err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("gendiff: error:"), (code, err)
    return lines[0]


def _copy(shipped, tmp_path):
    dst = tmp_path / "qm9_copy"
    shutil.copytree(shipped.path, dst)
    return dst


def test_truncated_weights_one_line_error(shipped, tmp_path, capsys):
    run = _copy(shipped, tmp_path)
    data = (run / "weights.safetensors").read_bytes()
    (run / "weights.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = _cli(capsys, "sample", "molecules", "--run", str(run), "--n", "2", "--steps", "2",
                        "--out", str(tmp_path / "m.sdf"))
    assert str(run / "weights.safetensors") in _one_error_line(code, err)


def test_corrupt_header_one_line_error(shipped, tmp_path, capsys):
    run = _copy(shipped, tmp_path)
    data = bytearray((run / "weights.safetensors").read_bytes())
    data[8:40] = b"\xff" * 32
    (run / "weights.safetensors").write_bytes(bytes(data))
    code, _, err = _cli(capsys, "evaluate", "molecules", "--run", str(run), "--n", "2", "--steps", "2")
    assert str(run / "weights.safetensors") in _one_error_line(code, err)


def test_config_that_does_not_fit_the_weights(shipped, tmp_path, capsys):
    run = _copy(shipped, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["net"]["hidden_nf"] = cfg["net"]["hidden_nf"] // 2
    (run / "config.json").write_text(json.dumps(cfg))
    code, _, err = _cli(capsys, "sample", "molecules", "--run", str(run), "--n", "2", "--steps", "2",
                        "--out", str(tmp_path / "m.sdf"))
    line = _one_error_line(code, err)
    assert str(run / "weights.safetensors") in line and "config.json" in line


def test_older_run_format_says_what_to_do(shipped, tmp_path, capsys):
    run = _copy(shipped, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    del cfg["format"]
    (run / "config.json").write_text(json.dumps(cfg))
    code, _, err = _cli(capsys, "sample", "molecules", "--run", str(run), "--n", "2", "--out", str(tmp_path / "m.sdf"))
    line = _one_error_line(code, err)
    assert str(run / "config.json") in line and "convert_run" in line
    code, _, err = _cli(capsys, "sample", "molecules", "--run", "pretrained:nope", "--n", "2",
                        "--out", str(tmp_path / "m.sdf"))
    assert "pretrained:nope" in _one_error_line(code, err)


def test_list_shows_the_shipped_model(capsys):
    code, out, err = _cli(capsys, "list")
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("qm9 "))
    assert "molecules" in line and "atom_stability" in line


def test_convert_older_run(tmp_path):
    """A folder of the format before gendiff.runs (config.json without 'format' + checkpoint.pt) converts to one
    that loads, with the same EMA weights."""
    from gendiff.domains.molecules.data import molecule_to_data

    water = ([8, 1, 1], [[0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]])
    toy = [molecule_to_data(water[0], torch.tensor(water[1]) + 0.05 * k) for k in range(8)]
    run = molecules.train(data=toy, model="egnn", out=tmp_path / "r", max_steps=2, batch_size=8, progress=False,
                          hidden=16, layers=2)
    cfg = json.loads((run / "config.json").read_text())
    legacy = {k: v for k, v in cfg.items() if k not in ("format", "features", "denoiser")}
    (run / "config.json").write_text(json.dumps(legacy))
    (run / "weights.safetensors").unlink()
    with pytest.raises(Exception, match="convert_run"):
        molecules.load_run(run, device="cpu")
    out = molecules.convert_run(run, tmp_path / "new", command="test", commit="none")
    a, *_ = molecules.load_run(out, device="cpu")
    ema = torch.load(run / "checkpoint.pt", weights_only=True)["ema"]
    assert all(torch.equal(a.state_dict()[k], v) for k, v in ema.items())
