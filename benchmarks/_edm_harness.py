"""Drive EDM's own QM9 code (a local checkout of ehoogeboom/e3_diffusion_for_molecules) for the molecules race.

Run by `benchmarks/molecules.py race` in its own process (EDM's top-level modules `utils`, `qm9`, `egnn` must not
meet gendiff's), never imported by gendiff. Nothing of EDM is copied here: this file builds EDM's argument namespace
(its QM9 recipe: polynomial_2 schedule, precision 1e-5, 1000 steps, l2 loss, normalize factors 1/4/10, AdamW with
amsgrad, its adaptive gradient clipping and its EMA), loads the data with EDM's own loader (qm9.dataset), trains
with EDM's own `train_test.train_epoch` in chunks of batches until the training CPU time reaches each checkpoint
mark, then samples every checkpoint's EMA weights with EDM's own 1000-step ancestral sampler (qm9.sampling.sample).
Molecules are written as npz (atomic numbers, positions, atom counts) for gendiff's evaluator; the EMA weights per
checkpoint go next to them (torch.save, outside git).

Both halves resume: training from OUT/state.pt (weights, EMA, optimiser, clipping queue, RNG, CPU time; saved every
--save-every CPU seconds and at each mark; the data order restarts with a fresh shuffled pass), sampling from the
parts already written (--sample-batch molecules each, own seed). Rerunning the same command continues; --no-sample
trains only, --only-k K samples one checkpoint (one process per checkpoint uses several cores).

wandb and imageio (EDM imports them for logging and GIFs, neither used on this path) are replaced by inert modules
when they are not installed.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import types
from pathlib import Path

from gendiff.io import torch_save_atomic, write_npz_atomic, write_text_atomic  # gendiff's atomic writers only


def _inert_modules() -> None:
    """EDM imports wandb (logging) and imageio (GIFs) at module level; neither is used here."""
    try:
        import wandb  # noqa: F401
    except ModuleNotFoundError:
        wandb = types.ModuleType("wandb")
        wandb.log = lambda *a, **k: None
        wandb.init = lambda *a, **k: None
        wandb.save = lambda *a, **k: None
        wandb.Image = lambda *a, **k: None
        wandb.Settings = lambda *a, **k: None
        sys.modules["wandb"] = wandb
    try:
        import imageio  # noqa: F401
    except ModuleNotFoundError:
        sys.modules["imageio"] = types.ModuleType("imageio")


def edm_args(a) -> argparse.Namespace:
    """EDM's QM9 training arguments (its README's `main_qm9.py` command), network size, batch, lr and EMA from `a`."""
    return argparse.Namespace(
        exp_name="gendiff_race", model="egnn_dynamics", probabilistic_model="diffusion", diffusion_steps=1000,
        diffusion_noise_schedule="polynomial_2", diffusion_noise_precision=1e-5, diffusion_loss_type="l2",
        n_epochs=10**9, batch_size=a.batch_size, lr=a.lr, brute_force=False, actnorm=True, break_train_epoch=False,
        dp=False, condition_time=True, clip_grad=True, trace="hutch", n_layers=a.layers, inv_sublayers=1,
        nf=a.hidden, tanh=True, attention=True, norm_constant=1, sin_embedding=False, ode_regularization=1e-3,
        dataset="qm9", datadir=str(a.datadir), filter_n_atoms=None, dequantization="argmax_variational",
        n_report_steps=10**9, wandb_usr=None, no_wandb=True, online=False, no_cuda=True, cuda=False,
        save_model=False, generate_epochs=1, num_workers=0, test_epochs=10**9, data_augmentation=False,
        conditioning=[], resume=None, start_epoch=0, ema_decay=a.ema_decay, augment_noise=0,
        n_stability_samples=0, normalize_factors=[1, 4, 10], remove_h=False, include_charges=True,
        visualize_every_batch=10**8, normalization_factor=1, aggregation_method="sum", context_node_nf=0)


class _Chunk:
    """`k` batches from a persistent pass over EDM's train loader (a new shuffled pass when one ends), so each
    train_epoch call is k of EDM's own optimisation steps."""

    def __init__(self, loader):
        self.loader, self.it, self.k = loader, iter(loader), 0

    def __len__(self):
        return self.k

    def __iter__(self):
        for _ in range(self.k):
            try:
                yield next(self.it)
            except StopIteration:
                self.it = iter(self.loader)
                yield next(self.it)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--edm-repo", required=True)
    p.add_argument("--datadir", required=True, help="folder holding qm9/{train,valid,test}.npz in EDM's format")
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-seconds", type=float, required=True, help="training CPU-time budget")
    p.add_argument("--checkpoints", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=9)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--ema-decay", type=float, default=0.9999)
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--sample-batch", type=int, default=100)
    p.add_argument("--chunk", type=int, default=20, help="optimisation steps between CPU-time checks")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=float, default=300.0,
                   help="training CPU seconds between resumable saves (OUT/state.pt; rerun the same command to resume)")
    p.add_argument("--no-sample", action="store_true", help="train only; sample in a later call")
    p.add_argument("--only-k", type=int, default=None,
                   help="sample only checkpoint K (run one process per checkpoint to use several cores)")
    a = p.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    repo = Path(a.edm_repo).resolve()
    sys.path.insert(0, str(repo))
    _inert_modules()
    from configs.datasets_config import get_dataset_info  # EDM's modules from here on
    from equivariant_diffusion import utils as flow_utils
    from qm9 import dataset
    from qm9.models import get_model, get_optim
    from qm9.sampling import sample
    import train_test
    import utils as edm_utils

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    args = edm_args(a)
    device, dtype = torch.device("cpu"), torch.float32
    dataset_info = get_dataset_info(args.dataset, args.remove_h)
    dataloaders, _ = dataset.retrieve_dataloaders(args)
    model, nodes_dist, prop_dist = get_model(args, device, dataset_info, dataloaders["train"])
    optim = get_optim(args, model)
    gradnorm_queue = edm_utils.Queue()
    gradnorm_queue.add(3000)  # as EDM's main_qm9: a large value flushed by the first steps
    model_ema = copy.deepcopy(model)
    ema = flow_utils.EMA(args.ema_decay)
    chunk = _Chunk(dataloaders["train"])
    marks = [a.cpu_seconds * (k + 1) / a.checkpoints for k in range(a.checkpoints)]
    progress_file = out / "progress.json"
    progress = {"parameters": sum(p.numel() for p in model.parameters()), "args": vars(args), "checkpoints": []}
    train_cpu, steps = 0.0, 0
    state_file = out / "state.pt"
    if state_file.is_file():  # resume: weights, EMA, optimiser, clipping queue, RNG, CPU time and steps so far
        st = torch.load(state_file, weights_only=False)
        model.load_state_dict(st["model"])
        model_ema.load_state_dict(st["model_ema"])
        optim.load_state_dict(st["optim"])
        gradnorm_queue.items = list(st["gradnorm"])
        torch.set_rng_state(st["torch_rng"])
        np.random.set_state(st["numpy_rng"])
        train_cpu, steps = float(st["train_cpu"]), int(st["steps"])
        progress = json.loads(progress_file.read_text())
        print(f"EDM resumed at {steps} steps, {train_cpu:.0f} s training CPU", flush=True)

    def save_state() -> None:
        torch_save_atomic({"model": model.state_dict(), "model_ema": model_ema.state_dict(),
                           "optim": optim.state_dict(), "gradnorm": list(gradnorm_queue.items),
                           "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                           "train_cpu": train_cpu, "steps": steps}, state_file)
        write_text_atomic(progress_file, json.dumps(progress, indent=1, default=str))

    last_save = train_cpu
    for k, mark in enumerate(marks):
        if any(c["k"] == k for c in progress["checkpoints"]):
            continue
        while train_cpu < mark:
            per_step = train_cpu / steps if steps else None
            chunk.k = a.chunk if per_step is None else max(1, min(a.chunk, int((mark - train_cpu) / per_step + 0.5)))
            c0 = time.process_time()
            train_test.train_epoch(args=args, loader=chunk, epoch=1, model=model, model_dp=model, model_ema=model_ema,
                                   ema=ema, device=device, dtype=dtype, property_norms=None, optim=optim,
                                   nodes_dist=nodes_dist, gradnorm_queue=gradnorm_queue, dataset_info=dataset_info,
                                   prop_dist=prop_dist)
            train_cpu += time.process_time() - c0
            steps += chunk.k
            if train_cpu - last_save >= a.save_every:
                save_state()
                last_save = train_cpu
        torch_save_atomic(model_ema.state_dict(), out / f"edm_ema_{k}.pt")
        progress["checkpoints"].append({"k": k, "train_cpu_seconds": train_cpu, "steps": steps})
        save_state()
        print(f"EDM checkpoint {k}: {steps} steps, {train_cpu:.0f} s training CPU", flush=True)
    if not a.no_sample:
        for c in progress["checkpoints"]:
            sample_checkpoint(a, out, c["k"], model_ema, args, dataset_info, prop_dist, nodes_dist, sample)
    return 0


def sample_checkpoint(a, out: Path, k: int, model_ema, args, dataset_info, prop_dist, nodes_dist, sample) -> None:
    """EDM's own 1000-step sampler on checkpoint c's EMA weights, in parts of --sample-batch molecules, each part
    its own seed and file (edm_samples_K/part_JJJ.npz), so an interrupted sampling resumes at the next part; when
    all n parts are there they are joined into edm_samples_K.npz with the parts' summed sampling CPU and wall time
    (progress.json is the training's alone: several sampling processes run at once)."""
    import numpy as np
    import torch

    if (out / f"edm_samples_{k}.npz").is_file() or (a.only_k is not None and k != a.only_k):
        return
    model_ema.load_state_dict(torch.load(out / f"edm_ema_{k}.pt", weights_only=True))
    model_ema.eval()
    parts = out / f"edm_samples_{k}"
    parts.mkdir(exist_ok=True)
    n_parts = -(-a.n_samples // a.sample_batch)
    for j in range(n_parts):
        part = parts / f"part_{j:03d}.npz"
        if part.is_file():
            continue
        b = min(a.sample_batch, a.n_samples - j * a.sample_batch)
        s0, w0 = time.process_time(), time.perf_counter()
        torch.manual_seed(a.seed + 1 + 1000 * k + j)
        zs, pos, counts = [], [], []
        with torch.no_grad():
            nodes = nodes_dist.sample(b)
            one_hot, charges, x, node_mask = sample(args, torch.device("cpu"), model_ema, dataset_info, prop_dist,
                                                    nodesxsample=nodes)
        types_ = one_hot.argmax(-1)
        for i in range(b):
            n = int(node_mask[i].sum())
            zs.append(np.asarray([1, 6, 7, 8, 9])[types_[i, :n].numpy()])
            pos.append(x[i, :n].numpy())
            counts.append(n)
        write_npz_atomic(part, z=np.concatenate(zs), pos=np.concatenate(pos), num_atoms=np.asarray(counts),
                         cpu=time.process_time() - s0, wall=time.perf_counter() - w0)
        print(f"EDM checkpoint {k}: part {j + 1}/{n_parts} sampled ({time.process_time() - s0:.0f} s CPU)",
              flush=True)
    files = [np.load(parts / f"part_{j:03d}.npz") for j in range(n_parts)]
    write_npz_atomic(out / f"edm_samples_{k}.npz", z=np.concatenate([f_["z"] for f_ in files]),
                     pos=np.concatenate([f_["pos"] for f_ in files]),
                     num_atoms=np.concatenate([f_["num_atoms"] for f_ in files]),
                     cpu=sum(float(f_["cpu"]) for f_ in files), wall=sum(float(f_["wall"]) for f_ in files))


if __name__ == "__main__":
    raise SystemExit(main())
