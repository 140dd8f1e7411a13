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
    [-1.227262, -1.36402, -0.71232, -1.279086, 2.027738, 1.502458, -0.752065, -5.241612, -0.301566],
    [-0.453278, 0.087236, -0.239929, -0.125791, 2.868188, 2.667436, -0.593772, -3.255918, -4.576815],
    [0.642968, 0.50005, -0.155342, -3.821751, -0.87132, 4.064003, 1.842526, -1.469568, -1.797306],
    [-0.068978, 0.644784, 0.791258, 1.792966, -2.04432, -1.490484, 0.033565, -1.184711, 0.228123],
    [1.106549, 0.13195, 0.316331, 0.920029, -0.429412, 1.731132, -0.708165, 0.094269, 0.114821],
    [1.702662, -0.29558, -0.95792, -0.826197, 0.972689, 1.190671, 0.183513, -0.270816, -0.760481],
    [0.355449, 0.50616, -0.018555, 0.851939, 1.712036, 3.896159, -1.789016, -1.436045, 1.749699],
    [-0.414411, 0.171028, 1.065702, 1.255906, 1.443897, -1.741789, 2.952999, -0.552224, 0.067882],
    [-1.243829, 0.194322, -0.102909, -0.617491, -1.282672, 1.252293, -0.185635, 0.933317, -0.430242],
    [0.411946, 0.103138, 0.362011, 0.961072, -0.513084, 1.162028, 0.382687, -0.288372, 2.307916],
    [-1.499963, 0.710867, -0.654014, -1.142578, -0.000417, 0.785887, 1.878026, -1.584495, 0.058089],
    [0.138949, -1.51462, -1.022551, -0.295869, 0.275587, 0.248724, 0.062932, 0.389928, 0.193414],
    [0.27813, 0.005417, 0.82831, -0.876686, -1.081451, -0.524506, -0.959383, 0.653025, 0.37031],
    [0.271068, 0.119269, 0.499927, -0.131176, 0.07151, -0.717246, -1.459239, -0.122043, -1.500095],
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
