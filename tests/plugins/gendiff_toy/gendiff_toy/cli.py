"""`gendiff train toy` / `gendiff sample toy`: a small MLP denoiser on the core's 2-D Gaussian mixture."""

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from gendiff import Denoiser, EuclideanSpace, diffusion_loss, get_schedule, prior_sample, sample
from gendiff.toy import GaussianMixture


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 2))

    def forward(self, x_t, t, *, mask=None, cond=None):
        return self.net(torch.cat([x_t, t[:, None]], dim=1))


def _model():
    return Denoiser(Net(), get_schedule("cosine"), prediction="v")


def add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=50)


def run_train(args) -> int:
    torch.manual_seed(0)
    model, space = _model(), EuclideanSpace()
    data = GaussianMixture.default_2d().sample(1024, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(args.steps):
        batch = data[torch.randint(0, len(data), (128,), generator=g)]
        loss = diffusion_loss(model, batch, model.schedule, space, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    loss = loss.detach()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "summary.json").write_text(json.dumps({"domain": "toy", "steps": args.steps, "loss": float(loss)}))
    print(f"toy: trained {args.steps} steps, loss {float(loss):.4f}")
    return 0


def add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", required=True)
    p.add_argument("--n", type=int, default=256)


def run_sample(args) -> int:
    model = _model()
    model.load_state_dict(torch.load(Path(args.run) / "model.pt", weights_only=True))
    g = torch.Generator().manual_seed(2)
    x_T = prior_sample(model.schedule, EuclideanSpace(), torch.zeros(args.n, 2), generator=g)
    x = sample("ddim", model, x_T, model.schedule, EuclideanSpace(), steps=10, generator=g)
    print(f"toy: {args.n} samples, mean {x.mean(0).tolist()}")
    return 0


VERBS = {"train": (add_train, run_train), "sample": (add_sample, run_sample)}
