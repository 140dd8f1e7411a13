"""Bring your own model: any torch.nn.Module with the core's signature model(x_t, t, *, mask=None, cond=None),
trained and sampled by the core on a 2-D Gaussian mixture whose moments are known exactly.

    python examples/bring_your_own_model.py [--out runs/examples/bring_your_own_model] [--smoke]

Look at the printed sample mean and standard deviation against the mixture's true ones, and the sliced
Wasserstein distance to fresh data (the same number for a second data draw is the floor). The trainer's
checkpoint is OUT/checkpoint.pt. `--smoke` or GENDIFF_EXAMPLE_SMOKE=1: 30 steps, 500 samples: a check, not a fit.
"""
import argparse
import os

import torch
from torch import nn

from gendiff.forward import Denoiser
from gendiff.losses import diffusion_loss
from gendiff.samplers import prior_sample, sample
from gendiff.schedules import get_schedule
from gendiff.spaces import EuclideanSpace
from gendiff.toy import GaussianMixture, sliced_wasserstein
from gendiff.training import TrainConfig, Trainer

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--out", default="runs/examples/bring_your_own_model")
p.add_argument("--smoke", action="store_true")
args = p.parse_args()
steps, n = (30, 500) if args.smoke or os.environ.get("GENDIFF_EXAMPLE_SMOKE") == "1" else (1500, 4000)


class MyNet(nn.Module):
    def __init__(self, width=128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, 2))

    def forward(self, x_t, t, *, mask=None, cond=None):  # the one signature every core sampler and loss calls
        return self.net(torch.cat([x_t, t[:, None]], dim=1))


schedule, space, truth = get_schedule("cosine"), EuclideanSpace(), GaussianMixture.default_2d()
model = Denoiser(MyNet(), schedule, prediction="v")  # the network predicts v; "eps" and "x0" work too
data = truth.sample(8192, torch.Generator().manual_seed(0))  # any map-style dataset of tensors
config = TrainConfig(max_steps=steps, batch_size=256, lr=3e-3, warmup_steps=min(20, steps), ema_decay=0.99,
                     progress=False)
trainer = Trainer(model, lambda m, batch, g: diffusion_loss(m, batch, schedule, space, generator=g).mean(), data,
                  config, out_dir=args.out, resume="auto")  # a re-run continues the checkpoint
trainer.fit()

g = torch.Generator().manual_seed(1)
x_T = prior_sample(schedule, space, torch.zeros(n, 2), generator=g)
x = sample("dpm_solver_pp", trainer.ema_model, x_T, schedule, space, steps=20, generator=g)
fresh, again = truth.sample(n, torch.Generator().manual_seed(2)), truth.sample(n, torch.Generator().manual_seed(3))
fmt = lambda v: "(" + ", ".join(f"{a:.2f}" for a in v.tolist()) + ")"  # noqa: E731
print(f"sample mean {fmt(x.mean(0))} std {fmt(x.std(0))}")
print(f"true   mean {fmt(truth.mean())} std {fmt(truth.cov().diagonal().sqrt())}")
print(f"sliced Wasserstein to fresh data {sliced_wasserstein(x, fresh):.3f} "
      f"(a second data draw: {sliced_wasserstein(again, fresh):.3f})")
