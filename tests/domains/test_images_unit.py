"""Images domain, fast unit tests: U-Net shapes and conditioning, pixel codec, loaders, FD / KID against oracles."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from gendiff.domains.images import data as D
from gendiff.domains.images import formats as F
from gendiff.domains.images import metrics as M
from gendiff.domains.images.unet import UNet, UNetConfig
from gendiff.errors import ConfigError, DataError

torch.set_num_threads(1)
TINY = dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), groups=8, dropout=0.0)


@pytest.mark.parametrize("res,channels", [(8, 1), (16, 3), (32, 1), (28, 1)])
def test_unet_shapes_dtypes(res, channels):
    net = UNet(UNetConfig(in_channels=channels, resolution=res, **TINY)).eval()
    x = torch.randn(3, channels, res, res)
    y = net(x, torch.rand(3))
    assert y.shape == x.shape and y.dtype == torch.float32
    y64 = net.double()(x.double(), torch.rand(3, dtype=torch.float64))
    assert y64.dtype == torch.float64
    y_scalar_t = net.float()(x, torch.tensor(0.5))
    assert y_scalar_t.shape == x.shape


def test_unet_rejects_bad_sizes_and_config():
    net = UNet(resolution=16, **{**TINY, "ch_mult": (1, 2, 2)})
    with pytest.raises(ConfigError, match="divisible by 4"):
        net(torch.randn(1, 1, 10, 10), torch.rand(1))
    with pytest.raises(ConfigError, match="num_classes=None"):
        net(torch.randn(1, 1, 16, 16), torch.rand(1), cond=torch.tensor([1]))
    with pytest.raises(ConfigError, match="unknown U-Net config"):
        UNetConfig.from_dict({"ch": 8, "chanels": 3})


def _perturbed(net):
    """Zero-initialised output layers make a fresh U-Net output 0; randomise them so differences are visible."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def test_conditioning_changes_output_and_null_class_is_default():
    net = _perturbed(UNet(resolution=16, num_classes=10, **TINY))
    x, t = torch.randn(2, 1, 16, 16), torch.full((2,), 0.3)
    a = net(x, t, cond=torch.tensor([1, 1]))
    b = net(x, t, cond=torch.tensor([7, 7]))
    null = net(x, t, cond=torch.tensor([10, 10]))
    assert (a - b).abs().max() > 1e-3
    torch.testing.assert_close(net(x, t), null)
    torch.testing.assert_close(net(x, t, cond=torch.tensor([1, 7]))[1], b[1])
    assert (net(x, torch.full((2,), 0.9)) - null).abs().max() > 1e-3  # time matters too


def test_unet_channels_last_and_bf16_autocast():
    net = _perturbed(UNet(resolution=16, num_classes=3, **TINY))
    x, t, c = torch.randn(2, 1, 16, 16), torch.rand(2), torch.tensor([0, 2])
    ref = net(x, t, cond=c)
    cl = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(cl(x.contiguous(memory_format=torch.channels_last), t, cond=c), ref,
                               rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t, cond=c)
    assert out.dtype == torch.float32 and (out - ref).abs().max() < 0.1


def test_pixel_round_trip_exact():
    p = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).repeat(2, 3, 1, 1)
    x = D.to_model(p)
    assert x.min() == -1 and x.max() == 1 and x.dtype == torch.float32
    assert torch.equal(D.to_pixels(x), p)
    assert torch.equal(D.to_pixels(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255], dtype=torch.uint8))


def test_embedded_mnist_split_is_stratified_and_fixed():
    tr, te = D.load_data("mnist", "train"), D.load_data("mnist", "test")
    assert tr.shape == (1, 32, 32) and len(tr) == 4000 and len(te) == 1000
    assert torch.equal(torch.bincount(te.labels), torch.full((10,), 100))
    assert tr.images[:, :, :2].sum() == 0  # zero padding 28 -> 32
    again = D.load_data("mnist", "test")
    assert torch.equal(again.images, te.images)
    digits = D.load_data("digits", "all")
    assert digits.shape == (1, 8, 8) and len(digits) == 1797 and digits.images.max() == 255


def _write_png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)


def test_folder_loader_labels_resize_and_corrupt_file(tmp_path):
    rng = np.random.default_rng(0)
    for cls, size in (("cat", (20, 30)), ("dog", (40, 40))):
        (tmp_path / cls).mkdir()
        for i in range(3):
            _write_png(tmp_path / cls / f"{i}.png", rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    data = D.load_folder(tmp_path, image_size=16)
    assert data.images.shape == (6, 3, 16, 16) and data.classes == ["cat", "dog"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    grey = tmp_path / "grey"
    grey.mkdir()
    _write_png(grey / "a.png", np.full((16, 16), 7, dtype=np.uint8))
    g = D.load_folder(grey, image_size=16)
    assert g.labels is None and g.images.shape == (1, 1, 16, 16) and int(g.images[0, 0, 3, 3]) == 7
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        D.load_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        D.load_folder(tmp_path / "empty")


def test_mnist_idx_files_read_without_torchvision(tmp_path):
    rng = np.random.default_rng(1)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    imgs, labs = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), rng.integers(0, 10, 7).astype(np.uint8)
    F.write_idx(raw / "t10k-images-idx3-ubyte", imgs)
    F.write_idx(raw / "t10k-labels-idx1-ubyte", labs)
    data = D.load_data(f"mnist-full:{tmp_path}", "test")
    assert torch.equal(data.images[:, 0], torch.from_numpy(imgs)) and data.labels.tolist() == labs.tolist()
    padded = D.load_data(f"mnist-full:{tmp_path}", "test", image_size=32)
    assert padded.images.shape == (7, 1, 32, 32)
    with pytest.raises(DataError, match="no mnist files"):
        D.load_data(f"mnist-full:{tmp_path}", "train")
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 5)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        D.load_data(f"mnist-full:{tmp_path}", "train")


def test_cifar10_pickles_read_without_torchvision(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    imgs, labs = rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), [3, 1, 4, 1]
    F.write_cifar10_batch(folder / "test_batch", imgs, labs)
    data = D.load_data(f"cifar10:{tmp_path}", "test")
    assert torch.equal(data.images, torch.from_numpy(imgs)) and data.labels.tolist() == labs
    assert data.classes[3] == "cat"
    # torchvision is hidden so that this never reaches the network, even where torchvision is installed
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(DataError, match="torchvision"):
        D.load_data(f"cifar10:{tmp_path}", "train", download=True)


def test_frechet_distance_known_values_and_scipy_oracle():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3)) * 2.0 + 1.0
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    import scipy.linalg

    oracle = ((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert M.frechet_distance(a, b) == pytest.approx(oracle, rel=1e-6)
    # closed form for diagonal Gaussians: |mu|^2 + sum (sqrt(va) - sqrt(vb))^2 = 3 + 3 * (1 - 2)^2 = 6
    assert M.frechet_distance_from_stats(np.zeros(3), np.eye(3), np.ones(3), 4 * np.eye(3)) == pytest.approx(6.0)
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_kid_matches_brute_force_mmd():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(40, 5)) + 0.5
    k = lambda u, v: (u @ v / 5 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(30) for j in range(30) if i != j) / (30 * 29)
    yy = sum(k(y[i], y[j]) for i in range(40) for j in range(40) if i != j) / (40 * 39)
    xy = sum(k(x[i], y[j]) for i in range(30) for j in range(40)) / (30 * 40)
    assert M.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    mean, std = M.kernel_inception_distance(x, y, subsets=20, subset_size=30)
    assert mean > 0 and std >= 0
    same, _ = M.kernel_inception_distance(x[:15], x[15:], subsets=5, subset_size=15)
    assert abs(same) < mean


def test_class_entropy():
    assert M.class_entropy([0, 1, 2, 3], 4) == pytest.approx(np.log(4))
    assert M.class_entropy([2, 2, 2], 10) == 0.0


def test_inception_loading_path(tmp_path):
    from gendiff.domains.images.inception import FIDInceptionV3, inception_features, load_fid_inception

    with pytest.raises(DataError, match="not found"):
        load_fid_inception(tmp_path / "pt_inception.pth")
    torch.manual_seed(0)
    ref = FIDInceptionV3().eval()
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "pt_inception.pth")
    model = load_fid_inception(tmp_path / "pt_inception.pth")
    pix = torch.randint(0, 256, (1, 1, 16, 16), dtype=torch.uint8)
    feats = inception_features(model, pix)
    assert feats.shape == (1, 2048)
    torch.testing.assert_close(feats, inception_features(ref, pix))
    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(DataError, match="not a pytorch-fid"):
        load_fid_inception(tmp_path / "other.pth")


def test_labels_text_ranges_lists_and_balanced():
    from gendiff.domains.images import api

    assert api.parse_labels("0-9") == list(range(10)) and api.parse_labels("0,2,4-6") == [0, 2, 4, 5, 6]
    assert api.parse_labels("balanced") == "balanced" and api.parse_labels("none") is None
    assert api.parse_labels(None) is None and api.parse_labels("3") == [3]
    assert api.resolve_labels("0-2", 7, 10).tolist() == [0, 1, 2, 0, 1, 2, 0]  # cycled to n
    assert api.resolve_labels("balanced", 12, 10).tolist() == list(range(10)) + [0, 1]
    assert api.resolve_labels("4", 3, 10).tolist() == [4, 4, 4] and api.resolve_labels("none", 3, 10) is None
    assert api.grid_columns("0-9", 64, 10) == 10 and api.grid_columns("balanced", 64, 10) == 10
    assert api.grid_columns(None, 64, 10) is None and api.grid_columns([1, 2], 2, 10) is None
    for bad in ("a", "9-2", "1,,2", "-1"):
        with pytest.raises(ConfigError, match="labels"):
            api.parse_labels(bad)
    with pytest.raises(ConfigError, match=r"\[0, 9\]"):
        api.resolve_labels("8-11", 4, 10)


def test_cli_rejects_bad_labels_in_one_line(capsys):
    from gendiff.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["sample", "images", "--run", "x", "--labels", "zero", "--out", "g.png"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gendiff: error: ") and "labels" in err[0]


# ---- images.train's options: ImageTrainConfig ---------------------------------------------------------------------
def test_train_config_is_validated_where_built():
    from gendiff.domains.images import ImageTrainConfig

    for bad in (dict(p_uncond=1.0), dict(resume="yes"), dict(device="tpu"), dict(compile=3),
                dict(trainer={"lr": -1.0}), dict(trainer={"bogus": 1}), dict(trainer={"seed": 1}),
                dict(max_steps=0)):
        with pytest.raises(ConfigError):
            ImageTrainConfig(**bad)
    with pytest.raises(ConfigError, match="'bogus' is no TrainConfig field"):
        ImageTrainConfig.from_kwargs(bogus=1)


def test_train_config_from_keywords_and_defaults():
    from gendiff.domains.images import ImageTrainConfig

    cfg = ImageTrainConfig.from_kwargs(max_steps=100, lr=1e-3, batch_size=8, seed=3)
    assert cfg.max_steps == 100 and cfg.seed == 3 and cfg.trainer == {"lr": 1e-3, "batch_size": 8}
    core = cfg.train_config()
    assert (core.lr, core.batch_size, core.max_steps, core.seed, core.warmup_steps) == (1e-3, 8, 100, 3, 10)
    assert core.ema_decay == 0.9 and ImageTrainConfig(time_budget=60).train_config().ema_decay == 0.995
    over = ImageTrainConfig.from_kwargs(cfg, p_uncond=0.2, lr=5e-4)  # keywords apply over a config
    assert over.p_uncond == 0.2 and over.max_steps == 100 and over.trainer == {"lr": 5e-4, "batch_size": 8}
    assert ImageTrainConfig.from_kwargs(cfg) is cfg


def test_train_takes_a_config_or_the_same_keywords(tmp_path):
    from gendiff.domains import images

    kw = dict(model=TINY, max_steps=2, batch_size=16, progress=False, image_size=8)
    torch.manual_seed(0)  # the U-Net is initialised from the global stream, before the Trainer seeds it
    by_keywords = images.train("digits", tmp_path / "a", lr=1e-3, **kw)
    config = images.ImageTrainConfig.from_kwargs(**kw, lr=1e-3)
    torch.manual_seed(0)
    by_config = images.train("digits", tmp_path / "b", config=config)
    assert by_keywords["loss"] == by_config["loss"] and by_keywords["step"] == by_config["step"] == 2
    a, _ = images.load_run(tmp_path / "a", device="cpu")
    b, _ = images.load_run(tmp_path / "b", device="cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
