"""The property classifier of EDM's conditional QM9 protocol: an EGNN regressor on positions and atom types
predicting one QM9 property, trained on EDM's first half of the train split; its MAE on real molecules is the
protocol's lower bound, its MAE on a conditional run's samples against their targets the score. (Named classifier as
EDM names it; properties.py holds the data side.)

Training is resumable into a run folder (classifier_run.py: config.json, weights.safetensors, card.json with the
learning curve, checkpoint.pt), from Python or as a module:

    python -m gendiff.domains.molecules.classifier --property alpha --half first --out runs/clf_alpha \\
        --max-minutes 150 --resume

EDM's recipe (qm9/property_prediction/main_qm9_prop.py): EGNN 128 x 7, L1 on (value - mean) / MAD, Adam lr 1e-3,
batch 96, cosine annealing over 1,000 epochs. Here: the same loss, optimizer, batch and learning rate, cosine
annealing over `steps` (drawn epoch by epoch without replacement), and an EMA of the weights (what is saved)."""
from __future__ import annotations

import argparse
import copy
import shlex
import sys
import time

import numpy as np
import torch
from torch import nn

from gendiff import runs
from gendiff.device import resolve_device
from gendiff.distributed import epoch_permutation
from gendiff.ema import ema_update
from gendiff.errors import ConfigError, GendiffError

from . import classifier_run as R
from .data import QM9Dataset, load_qm9
from .egnn import EGNN
from .model import FEATURE_DIM, encode
from .properties import HALVES, PROPERTIES, check_properties, normaliser, property_values, qm9_half


class PropertyRegressor(nn.Module):
    """EGNN (no time input) -> per-node invariant features -> sum over each molecule's atoms -> MLP -> one scalar
    per molecule (the normalised property). Invariant to rotations, translations and atom order."""

    def __init__(self, hidden_nf: int = 128, n_layers: int = 7):
        super().__init__()
        self.egnn = EGNN(in_node_nf=FEATURE_DIM, hidden_nf=hidden_nf, n_layers=n_layers, condition_time=False)
        self.egnn.embedding_out = nn.Linear(hidden_nf, hidden_nf)  # keep the hidden features, not 6 channels
        self.head = nn.Sequential(nn.Linear(hidden_nf, hidden_nf), nn.SiLU(), nn.Linear(hidden_nf, 1))

    def forward(self, batch) -> torch.Tensor:
        device = next(self.parameters()).device
        x, vec = encode(batch, device)
        t = torch.zeros(x.shape[0], device=device)
        h = self.egnn(x, t, mask=vec)[:, 3:]
        pooled = torch.zeros(int(vec.max()) + 1, h.shape[1], device=device, dtype=h.dtype).index_add_(0, vec, h)
        return self.head(pooled).squeeze(-1)


def _train_options(steps, batch_size, lr, lr_schedule, lr_final, ema_decay, seed) -> dict:
    """The training recipe, checked, as config.json's 'train' block."""
    if int(steps) < 1 or int(batch_size) < 1:
        raise ConfigError(f"steps {steps} and batch_size {batch_size} must be at least 1")
    if not float(lr) > 0 or not 0 <= float(lr_final) <= float(lr):
        raise ConfigError(f"lr {lr} must be positive and lr_final {lr_final} within [0, lr]")
    if lr_schedule not in R.LR_SCHEDULES:
        raise ConfigError(f"lr_schedule {lr_schedule!r}: expected one of {', '.join(R.LR_SCHEDULES)}")
    if not 0 <= float(ema_decay) < 1:
        raise ConfigError(f"ema_decay {ema_decay}: expected 0 (no EMA) or a decay in (0, 1)")
    return {"steps": int(steps), "batch_size": int(batch_size), "lr": float(lr), "lr_schedule": lr_schedule,
            "lr_final": float(lr_final), "ema_decay": float(ema_decay), "seed": int(seed)}


def train_classifier(prop: str = "alpha", half: str | None = "first", limit: int | None = None, *, out=None,
                     steps: int = 1000, batch_size: int = 96, lr: float = 1e-3, lr_schedule: str = "cosine",
                     lr_final: float = 0.0, ema_decay: float = 0.999, hidden: int = 128, layers: int = 7,
                     seed: int = 0, device: str = "cpu", max_minutes: float | None = None, resume: bool = False,
                     eval_every: int = 0, eval_n: int = 1000, progress: bool | int = False,
                     command: str | None = None) -> dict:
    """Train a PropertyRegressor on `prop` over EDM's `half` of QM9's train split (its first `limit` molecules) with
    an L1 loss on the normalised property (EDM's classifier: L1, mean / MAD) -> {'model' (the EMA model with
    ema_decay > 0), 'property', 'mean', 'mad', 'unit', 'steps', 'curve', 'stopped', 'path'}.

    `steps` is the run's total (cumulative over sittings) and the cosine schedule's length (`lr_schedule`
    'cosine' from `lr` to `lr_final`, or 'constant'). With `out` the run is a folder (classifier_run.py), saved every
    classifier_run.CHECKPOINT_MINUTES and at the end; with `resume` it continues from its checkpoint.pt, or from
    weights.safetensors + config.json alone (a fresh optimizer). `max_minutes` bounds this sitting's wall time (it
    stops before a step would overrun). Every `eval_every` steps (and at the end of a sitting with `out`) the MAE on
    the first `eval_n` molecules of the other half (the valid split for half None) joins the learning curve.
    `progress`: True prints evaluations, saves and every 50th step's loss; an integer N every Nth step's."""
    train = _train_options(steps, batch_size, lr, lr_schedule, lr_final, ema_decay, seed)
    (name,) = check_properties([prop])
    if half is not None and half not in HALVES:
        raise ConfigError(f"half {half!r}: expected one of {', '.join(HALVES)}")
    if resume and out is None:
        raise ConfigError("resume needs out (the run folder to continue)")
    if int(eval_every) < 0 or int(eval_n) < 1:
        raise ConfigError(f"eval_every {eval_every} must be >= 0 and eval_n {eval_n} >= 1")
    if max_minutes is not None and not float(max_minutes) > 0:
        raise ConfigError(f"max_minutes {max_minutes} must be positive")
    dev = resolve_device(device)
    ds = qm9_half(half)
    n = min(int(limit), len(ds)) if limit else len(ds)
    values = property_values(ds, [name])[:n, 0]
    norm = normaliser(values[:, None], [name])
    held = {"half": R.HELD_OUT[half], "n": int(eval_n), "every": int(eval_every)}
    cfg = R.classifier_config(name, PROPERTIES[name][2], half, int(limit) if limit else None, n,
                              {"mean": norm["mean"][name], "mad": norm["mad"][name]}, hidden, layers, train, held)
    mode, saved = R.check_resume(out, cfg, resume) if out is not None else ("fresh", None)
    if saved is not None:
        cfg["normalisation"] = saved["normalisation"]  # the targets the saved weights were trained on
    torch.manual_seed(int(seed))
    model = PropertyRegressor(hidden, layers).to(dev)
    ema = copy.deepcopy(model).requires_grad_(False) if train["ema_decay"] else None
    opt = torch.optim.Adam(model.parameters(), lr=train["lr"])
    step, start_card = R.restore(out, mode, model, ema, opt) if mode != "fresh" else (0, None)
    mean, mad = cfg["normalisation"]["mean"], cfg["normalisation"]["mad"]
    target = torch.as_tensor((values - mean) / mad, dtype=torch.float32)
    sitting = _Sitting(cfg, ds, target, model, ema, opt, step, start_card, out, dev, command, progress)
    log_every = 0 if not progress else 50 if progress is True else int(progress)
    stopped = sitting.run(max_minutes, R.CHECKPOINT_MINUTES, int(eval_every), log_every, save_idle=mode == "fresh")
    final = (ema if ema is not None else model).eval()
    return {"model": final, "property": name, "mean": mean, "mad": mad, "unit": PROPERTIES[name][2],
            "steps": sitting.step, "curve": sitting.curve, "stopped": stopped, "path": out}


class _Sitting:
    """One sitting of classifier training: the loop, its held-out evaluations and its saves."""

    def __init__(self, cfg, ds, target, model, ema, opt, step, start_card, out, device, command, progress):
        self.cfg, self.ds, self.target, self.model, self.ema, self.opt = cfg, ds, target, model, ema, opt
        self.step, self.start_card, self.out, self.device = int(step), start_card, out, device
        self.command, self.progress = command, progress
        prev = start_card or {}
        self.curve = [p for p in prev.get("curve", []) if int(p.get("train_steps") or 0) <= self.step]
        self.prev_cpu = float(prev.get("training", {}).get("cpu_seconds") or 0.0)
        self.wall0, self.cpu0 = runs.timer()
        self.losses: list[float] = []
        self.perm, self.epoch, self.held = None, None, None

    def _batch(self):
        n, train = len(self.target), self.cfg["train"]
        bs = min(train["batch_size"], n)
        epoch, k = divmod(self.step, n // bs)
        if epoch != self.epoch:
            self.perm, self.epoch = epoch_permutation(n, train["seed"], epoch), epoch
        pick = self.perm[k * bs:(k + 1) * bs]
        return QM9Dataset.collate_fn([self.ds[int(i)] for i in pick]), self.target[pick]

    def _train_step(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr
        batch, target = self._batch()
        self.model.train()
        loss = (self.model(batch) - target.to(self.device)).abs().mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        if self.ema is not None:
            ema_update(self.ema, self.model, R.ema_decay_at(self.step, self.cfg["train"]["ema_decay"]))
        self.losses.append(loss.item())

    def run(self, max_minutes, checkpoint_minutes: float, eval_every: int, log_every: int, save_idle: bool) -> str:
        """Train up to the run's total steps or the time budget -> why it stopped ('steps' or 'time')."""
        train, budget = self.cfg["train"], None if max_minutes is None else 60.0 * float(max_minutes)
        loop0 = last_save = time.perf_counter()
        done, stopped, lr = 0, "steps", R.lr_at(self.step, train)
        while self.step < train["steps"]:
            now = time.perf_counter()
            if budget is not None and done and now - self.wall0 + (now - loop0) / done > budget:
                stopped = "time"
                break
            lr = R.lr_at(self.step, train)
            self._train_step(lr)
            done += 1
            if log_every and self.step % log_every == 0:
                self._log(f"step {self.step}/{train['steps']}  lr {lr:.3g}  train L1 (normalised) "
                          f"{np.mean(self.losses[-log_every:]):.4f}  {(time.perf_counter() - loop0) / done:.2f} s/step")
            if eval_every and self.step % eval_every == 0:
                self.evaluate(lr)
            if self.out is not None and time.perf_counter() - last_save > 60.0 * checkpoint_minutes:
                self.save("running")
                last_save = time.perf_counter()
        ended = not self.curve or self.curve[-1]["train_steps"] != self.step
        if (self.out is not None or eval_every) and ended and (done or save_idle):
            self.evaluate(lr)
        if self.out is not None and (done or save_idle):
            self.save(stopped)
        self._log(f"stopped ({stopped}) at step {self.step} after {done} steps this sitting")
        return stopped

    def _log(self, text: str) -> None:
        if self.progress:
            print(f"classifier {self.cfg['property']}: {text}", flush=True)

    def _held_out(self):
        if self.held is None:
            spec = self.cfg["held_out"]
            pool = load_qm9(split="valid") if spec["half"] == "valid" else qm9_half(spec["half"])
            k = min(int(spec["n"]), len(pool))
            mols = [pool[i] for i in range(k)]
            self.held = ([QM9Dataset.collate_fn(mols[i:i + 250]) for i in range(0, k, 250)],
                         property_values(pool, [self.cfg["property"]])[:k, 0])
        return self.held

    def evaluate(self, lr: float) -> dict:
        """MAE (the property's unit) of the saved weights ('mae': EMA, else plain) and of the plain ones
        ('mae_plain', with EMA) on the held-out molecules; appended to the curve."""
        batches, values = self._held_out()
        norm = self.cfg["normalisation"]
        nets = {"mae": self.ema if self.ema is not None else self.model}
        if self.ema is not None:
            nets["mae_plain"] = self.model
        maes = {key: float(np.abs(_predict_batches(net, batches) * norm["mad"] + norm["mean"] - values).mean())
                for key, net in nets.items()}
        cpu_hours = (self.prev_cpu + time.process_time() - self.cpu0) / 3600
        recent = self.losses[-int(self.cfg["held_out"]["every"] or 100):]
        point = R.curve_point(maes, step=self.step, cpu_hours=cpu_hours, lr=lr, held_out=self.cfg["held_out"],
                              train_l1=float(np.mean(recent)) if recent else None)
        self.curve.append(point)
        self._log("held-out MAE " + "  ".join(f"{k} {v:.4f}" for k, v in maes.items()) +
                  f" {self.cfg['unit']} ({point['n']} molecules of {point['half']}) at step {self.step}")
        return point

    def save(self, stopped: str) -> None:
        wall, cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0
        card = R.make_card(self.out, self.cfg, self.start_card, step=self.step, wall=wall, cpu=cpu,
                           stopped=stopped, device=self.device, command=self.command, curve=self.curve,
                           parameters=sum(p.numel() for p in self.model.parameters()))
        R.save(self.out, self.cfg, self.model, self.ema, self.opt, self.step, card)
        self._log(f"saved {self.out} at step {self.step}")


def load_classifier(folder) -> dict:
    """A classifier run folder (train_classifier's `out`) -> what predict / mae / real_mae take: {'model' (eval
    mode, CPU), 'property', 'mean', 'mad', 'unit', 'steps', 'curve', 'path'}. Reads safetensors only."""
    run = R.read_classifier(folder)
    cfg = run.config
    model = PropertyRegressor(int(cfg["net"]["hidden_nf"]), int(cfg["net"]["n_layers"]))
    runs.load_weights(run, model)
    return {"model": model.eval(), "property": cfg["property"], "mean": float(cfg["normalisation"]["mean"]),
            "mad": float(cfg["normalisation"]["mad"]), "unit": cfg.get("unit", PROPERTIES[cfg["property"]][2]),
            "steps": int(run.card.get("training", {}).get("steps") or 0), "curve": run.card.get("curve", []),
            "path": run.path}


@torch.no_grad()
def _predict_batches(model, batches) -> np.ndarray:
    """The model's normalised predictions over collated batches, as float64."""
    was = model.training
    model.eval()
    out = torch.cat([model(b).float().cpu() for b in batches]).numpy().astype(np.float64)
    model.train(was)
    return out


def predict(clf: dict, mols, batch_size: int = 256) -> np.ndarray:
    """The classifier's property (in its unit) for each molecule of `mols` (Data records: pos, x, charge)."""
    mols = list(mols)
    if not mols:
        raise ConfigError("predict needs at least one molecule")
    bs = int(batch_size)
    batches = (QM9Dataset.collate_fn(mols[i:i + bs]) for i in range(0, len(mols), bs))
    return _predict_batches(clf["model"], batches) * clf["mad"] + clf["mean"]


def mae(clf: dict, mols, targets=None) -> float:
    """Mean absolute error of the classifier on `mols` against `targets` (default: each molecule's own
    `condition[property]`, as conditional sampling sets it)."""
    mols = list(mols)
    if targets is None:
        targets = [m.condition[clf["property"]] for m in mols]
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if targets.size != len(mols):
        raise ConfigError(f"{len(mols)} molecules but {targets.size} targets")
    return float(np.abs(predict(clf, mols) - targets).mean())


def real_predictions(clf: dict, half: str | None = "second", limit: int | None = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(the classifier's predictions, the true values) on the first `limit` real QM9 molecules of `half` (all with
    None)."""
    ds = qm9_half(half)
    n = min(int(limit), len(ds)) if limit else len(ds)
    if n < 1:
        raise ConfigError(f"limit {limit}: no molecules to predict")
    return predict(clf, [ds[i] for i in range(n)]), property_values(ds, [clf["property"]])[:n, 0]


def real_mae(clf: dict, half: str | None = "second", limit: int | None = 1000) -> float:
    """The classifier's MAE on real QM9 molecules of `half` (EDM's lower bound: trained on the first half,
    measured on the second)."""
    preds, values = real_predictions(clf, half, limit)
    return float(np.abs(preds - values).mean())


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, as the gendiff CLI
        sys.stderr.write(f"gendiff: error: {message}\n")
        sys.exit(2)


def main(argv=None) -> int:
    """The module CLI: train (or continue, --resume) a property classifier into a run folder."""
    p = _Parser(prog="python -m gendiff.domains.molecules.classifier", description=main.__doc__)
    p.add_argument("--property", default="alpha", help=f"one of {', '.join(PROPERTIES)}")
    p.add_argument("--half", default="first", choices=[*HALVES, "all"], help="EDM's half of QM9's train split")
    p.add_argument("--out", required=True, help="run folder (config.json, weights, card, checkpoint.pt)")
    p.add_argument("--steps", type=int, default=20_000, help="total steps over all sittings; the cosine's length")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget of this sitting")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--batch-size", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", default="cosine", choices=R.LR_SCHEDULES)
    p.add_argument("--lr-final", type=float, default=0.0)
    p.add_argument("--ema-decay", type=float, default=0.999, help="0: no EMA (plain weights are saved)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=7)
    p.add_argument("--limit", type=int, default=None, help="train on the first LIMIT molecules of the half")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--eval-every", type=int, default=400, help="steps between held-out MAE points (0: end only)")
    p.add_argument("--eval-n", type=int, default=1000, help="held-out molecules of the other half")
    p.add_argument("--log-every", type=int, default=50, help="steps between loss lines")
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if args.log_every < 1:
        p.error(f"--log-every {args.log_every}: expected a positive number of steps")
    try:
        clf = train_classifier(args.property, None if args.half == "all" else args.half, args.limit,
                               out=args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               lr_schedule=args.lr_schedule, lr_final=args.lr_final, ema_decay=args.ema_decay,
                               hidden=args.hidden, layers=args.layers, seed=args.seed, device=args.device,
                               max_minutes=args.max_minutes, resume=args.resume, eval_every=args.eval_every,
                               eval_n=args.eval_n, progress=args.log_every,
                               command=shlex.join(["python", "-m", "gendiff.domains.molecules.classifier", *argv]))
    except GendiffError as exc:
        sys.stderr.write(f"gendiff: error: {exc}\n")
        return 2
    last = clf["curve"][-1] if clf["curve"] else {}
    print(f"{args.out}: {clf['steps']} steps, held-out MAE {last.get('mae')} {clf['unit']}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
