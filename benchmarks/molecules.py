"""Molecule benchmark: (1) EGNN training speed, factored and concatenated sparse EGNN and a dense padded reference,
at EDM's QM9 configuration and the CPU one; (2) EDM's four metrics after the training this machine allows, ancestral
1000 steps vs a 50-step ODE.

    python benchmarks/molecules.py speed   --rounds 3 --steps 2 --threads 2   # edm (256 x 9) and cpu (64 x 4)
    python benchmarks/molecules.py quality --train-minutes 12 --n-ancestral 200 --n-fast 1000
    python benchmarks/molecules.py recipes --cpu-minutes 7 --n 300        # (3) recipe switches, same CPU budget
    python benchmarks/molecules.py race --edm-repo /tmp/edm --cpu-minutes 60 --checkpoints 6   # (4) gendiff vs EDM
Results are appended to benchmarks/results_molecules.md (command, machine, date).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("results_molecules.md")


def dense_egnn_forward(net, x: torch.Tensor, t: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
    """Reference EGNN on padded (B, N, F) tensors with (B, N, N) pairwise tensors and masks, as EDM's code computes it.

    Uses the weights of `net` (our EGNN), so its output must equal ours on the real atoms.
    """
    B, N, _ = x.shape
    nm = node_mask.to(x.dtype)[..., None]
    edge_mask = (node_mask[:, :, None] & node_mask[:, None, :] & ~torch.eye(N, dtype=torch.bool))[..., None].to(x.dtype)
    pos, h = x[..., :3], x[..., 3:]
    h = net.embedding(torch.cat([h, t[..., None]], -1)) * nm
    radial0 = ((pos[:, :, None] - pos[:, None, :]) ** 2).sum(-1, keepdim=True)
    p = pos
    for block in net.blocks:
        diff = p[:, :, None] - p[:, None, :]
        radial = (diff**2).sum(-1, keepdim=True)
        coord_diff = diff / (torch.sqrt(radial + 1e-8) + block.norm_constant)
        edge_attr = torch.cat([radial, radial0], -1)
        F = h.shape[-1]
        for gcl in block.gcls:
            hi, hj = h[:, :, None].expand(B, N, N, F), h[:, None, :].expand(B, N, N, F)
            agg = (gcl.message(hi, hj, edge_attr) * edge_mask).sum(2)
            h = gcl.update(h, agg) * nm
        hi, hj = h[:, :, None].expand(B, N, N, F), h[:, None, :].expand(B, N, N, F)
        trans = coord_diff * block.update.weight(hi, hj, edge_attr) * edge_mask
        p = p + trans.sum(2) / block.update.normalization_factor
    vel = (p - pos) * nm
    vel = vel - (vel.sum(1, keepdim=True) / nm.sum(1, keepdim=True)) * nm
    return torch.cat([vel, net.embedding_out(h)], -1) * nm


SPEED_CONFIGS = {"edm": (256, 9), "cpu": (64, 4)}  # EDM's QM9 EGNN; the shipped pretrained:qm9 (64 hidden, 4 layers)
SPEED_IMPLS = {"factored": "gendiff EGNN, factored first layers (default)",
               "concat": "gendiff EGNN, concatenated first layers (before issue 11)",
               "dense": "dense padded reference (B, N, N), EDM-style"}


def _speed_config(spec: str) -> tuple[str, int, int]:
    """'edm', 'cpu' or HIDDENxLAYERS -> (name, hidden, layers)."""
    if spec in SPEED_CONFIGS:
        return (spec, *SPEED_CONFIGS[spec])
    try:
        hidden, layers = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--configs: {spec!r} is not edm, cpu or HIDDENxLAYERS (such as 128x6)") from None
    return spec, hidden, layers


def _batches(n_batches: int, batch_size: int, seed: int):
    """n_batches real QM9 training batches from the domain's loader (QM9 train split, its collate_fn, shuffled with a
    seeded generator), encoded as training encodes them, noised as training noises them: t ~ U{1..T} / T of EDM's
    polynomial schedule per molecule, eps in the molecule space (zero-CoM positions), x_t = alpha x0 + sigma eps;
    the target is eps. Padded (B, N, F) copies for the dense reference."""
    from torch.utils.data import DataLoader
    from torch_geometric.utils import to_dense_batch

    from gendiff.domains.molecules.data import QM9Dataset, load_qm9
    from gendiff.domains.molecules.model import encode, molecule_space
    from gendiff.schedules import get_schedule

    ds = load_qm9(split="train")
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, generator=gen, collate_fn=QM9Dataset.collate_fn,
                        drop_last=True)
    schedule, space = get_schedule("polynomial", num_train_steps=1000), molecule_space()
    out = []
    for data, _ in zip(loader, range(n_batches)):
        x0, batch = encode(data)
        t = schedule.sample_t(int(batch.max()) + 1, generator=gen)[batch]
        alpha, sigma = (v.to(x0.dtype)[:, None] for v in schedule.alpha_sigma(t))
        eps = space.project(torch.randn(x0.shape, generator=gen), batch)
        x = alpha * x0 + sigma * eps
        xd, mask = to_dense_batch(x, batch)
        out.append(dict(x=x, t=t, batch=batch, target=eps, xd=xd, td=to_dense_batch(t, batch)[0], mask=mask,
                        targetd=to_dense_batch(eps, batch)[0], edges=int((torch.bincount(batch) ** 2).sum()
                                                                         - batch.numel())))
    return out


def _train_step_fns(hidden: int, layers: int, lr: float) -> dict:
    """One training step (forward, MSE to eps, backward, AdamW step) per implementation, each on its own copy of one
    initialisation with its own optimizer, so the three train the same model side by side."""
    import copy

    from gendiff.domains.molecules.model import build_net

    torch.manual_seed(0)
    base = build_net("egnn", hidden_nf=hidden, n_layers=layers, factored=True)
    nets = {"factored": base, "concat": copy.deepcopy(base).set_factored(False),
            "dense": copy.deepcopy(base).set_factored(False)}
    opts = {k: torch.optim.AdamW(n.parameters(), lr=lr) for k, n in nets.items()}

    def sparse(name):
        net, opt = nets[name], opts[name]

        def step(b):
            loss = ((net(b["x"], b["t"], mask=b["batch"]) - b["target"]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    def step_dense(b):
        out = dense_egnn_forward(nets["dense"], b["xd"], b["td"], b["mask"])
        loss = (((out - b["targetd"]) ** 2) * b["mask"][..., None]).sum() / (b["mask"].sum() * out.shape[-1])
        opts["dense"].zero_grad(set_to_none=True)
        loss.backward()
        opts["dense"].step()

    return {"factored": sparse("factored"), "concat": sparse("concat"), "dense": step_dense}, nets


def _median(v: list) -> float:
    v = sorted(v)
    return v[len(v) // 2] if len(v) % 2 else 0.5 * (v[len(v) // 2 - 1] + v[len(v) // 2])


def run_speed(args) -> dict:
    """Training steps per second of the factored EGNN, the concatenated (previous) EGNN and the dense reference at
    each configuration, alternated round by round in this one process (the order of the implementations rotates
    each round), on the same real QM9 batches; medians over rounds, by process CPU time and by wall clock."""
    import os

    torch.set_num_threads(args.threads)
    configs = [_speed_config(c) for c in args.configs.split(",")]
    impls = [i for i in args.impls.split(",")]
    if not impls or any(i not in SPEED_IMPLS for i in impls):
        raise SystemExit(f"--impls {args.impls!r}: expected a comma-separated subset of {', '.join(SPEED_IMPLS)}")
    batches = _batches(args.steps, args.batch_size, seed=args.seed)
    load0 = os.getloadavg()
    setups = {}
    for name, hidden, layers in configs:
        fns, nets = _train_step_fns(hidden, layers, args.lr)
        with torch.no_grad():  # all three compute the same function on the same weights
            b = batches[0]
            outs = {"factored": nets["factored"](b["x"], b["t"], mask=b["batch"]),
                    "concat": nets["concat"](b["x"], b["t"], mask=b["batch"]),
                    "dense": dense_egnn_forward(nets["dense"], b["xd"], b["td"], b["mask"])[b["mask"]]}
        diffs = {k: float((outs[k] - outs["concat"]).abs().max()) for k in ("factored", "dense")}
        for impl in impls:  # warm-up: one step each (allocator, kernels), then reset nothing: speed only
            fns[impl](batches[0])
        setups[name] = dict(hidden=hidden, layers=layers, fns=fns, nets=nets, diffs=diffs,
                            wall={i: [] for i in impls}, cpu={i: [] for i in impls})
    for r in range(args.rounds):
        for name, s in setups.items():
            order = impls[r % len(impls):] + impls[: r % len(impls)]
            for impl in order:
                t0, c0 = time.perf_counter(), time.process_time()
                for b in batches:
                    s["fns"][impl](b)
                s["wall"][impl].append((time.perf_counter() - t0) / len(batches))
                s["cpu"][impl].append((time.process_time() - c0) / len(batches))
                print(f"round {r} {name} {impl}: {s['cpu'][impl][-1]:.3f} s/step CPU, "
                      f"{s['wall'][impl][-1]:.3f} s/step wall", flush=True)
    results = {}
    for name, s in setups.items():
        cpu = {i: 1 / _median(v) for i, v in s["cpu"].items()}
        wall = {i: 1 / _median(v) for i, v in s["wall"].items()}
        drift = 0.0  # the factored and concatenated copies trained on the same batches: same weights up to rounding
        if "factored" in impls and "concat" in impls:
            pf, pc = dict(s["nets"]["factored"].named_parameters()), dict(s["nets"]["concat"].named_parameters())
            drift = max(float((pf[k] - pc[k]).abs().max()) for k in pf)
        results[name] = {"hidden": s["hidden"], "layers": s["layers"], "cpu_steps_per_s": cpu,
                         "wall_steps_per_s": wall, "cpu_s_per_step": s["cpu"], "wall_s_per_step": s["wall"],
                         "max_abs_output_diff_vs_concat": s["diffs"], "max_abs_weight_diff_after_training": drift}
    atoms = sum(int(b["batch"].numel()) for b in batches) / len(batches)
    return {"configs": results, "impls": impls, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"), "rounds": args.rounds,
            "steps_per_round": args.steps, "mean_atoms_per_batch": atoms,
            "mean_edges_per_batch": sum(b["edges"] for b in batches) / len(batches),
            "padded_atoms_per_batch": sum(b["xd"].shape[0] * b["xd"].shape[1] for b in batches) / len(batches),
            "loadavg_start": [round(v, 2) for v in load0],
            "loadavg_end": [round(v, 2) for v in os.getloadavg()]}


def _speed_markdown(res: dict) -> str:
    """The speed section: one table per configuration, steps/s by CPU time and wall clock, ratios to the others."""
    impls = res["impls"]
    text = (f"- batch {res['batch_size']} real QM9 training molecules per step (domain loader, "
            f"{res['steps_per_round']} batches: {res['mean_atoms_per_batch']:.0f} atoms, "
            f"{res['mean_edges_per_batch']:.0f} directed edges, padded {res['padded_atoms_per_batch']:.0f} atoms on "
            "average), noised by EDM's polynomial schedule; a train step = forward, MSE to eps, backward, AdamW step. "
            f"{res['threads']} torch thread(s), OMP_WAIT_POLICY {res['omp_wait_policy']}; {res['rounds']} rounds, "
            "implementations alternated round by round in one process (order rotated each round), medians over "
            f"rounds. Load average (1, 5, 15 min) {tuple(res['loadavg_start'])} at the start, "
            f"{tuple(res['loadavg_end'])} at the end: the cores are shared with other jobs, so process CPU time is the "
            "steadier measure; wall clock is what a user waits, and with 2 threads only wall clock shows what the "
            "second core adds (CPU time sums both threads).\n")
    for name, c in res["configs"].items():
        ref = "concat" if "concat" in impls else impls[0]
        text += (f"\n**{name}: {c['hidden']} features x {c['layers']} layers** (max |output - concatenated| on the "
                 f"first batch: factored {c['max_abs_output_diff_vs_concat']['factored']:.1e}, dense "
                 f"{c['max_abs_output_diff_vs_concat']['dense']:.1e}; max |weight difference| factored vs "
                 f"concatenated after all steps {c['max_abs_weight_diff_after_training']:.1e})\n\n"
                 f"| implementation | train steps/s (CPU time) | x {ref} | train steps/s (wall) | x {ref} |\n"
                 "|---|---|---|---|---|\n")
        for i in impls:
            cpu, wall = c["cpu_steps_per_s"][i], c["wall_steps_per_s"][i]
            text += (f"| {SPEED_IMPLS[i]} | {cpu:.4f} | {cpu / c['cpu_steps_per_s'][ref]:.2f} | {wall:.4f} | "
                     f"{wall / c['wall_steps_per_s'][ref]:.2f} |\n")
        if "factored" in impls and "dense" in impls:
            text += (f"\nfactored / dense: {c['cpu_steps_per_s']['factored'] / c['cpu_steps_per_s']['dense']:.2f}x "
                     f"(CPU time), {c['wall_steps_per_s']['factored'] / c['wall_steps_per_s']['dense']:.2f}x (wall)\n")
    return text


def run_quality(args) -> dict:
    """Train on QM9 for a time budget, then sample with each sampler and evaluate EDM's metrics."""
    from gendiff.domains import molecules
    from gendiff.domains.molecules.metrics import qm9_reference_smiles

    torch.set_num_threads(args.threads)
    run = Path(args.run)
    t0 = time.time()
    previous = json.loads((run / "train_summary.json").read_text()) if (run / "checkpoint.pt").exists() else None
    if previous is None or args.resume:
        molecules.train(data="qm9", model=args.model, out=run, max_minutes=args.train_minutes, max_steps=10**7,
                        batch_size=args.batch_size, lr=args.lr, ema_decay=args.ema_decay, hidden=args.hidden,
                        layers=args.layers, seed=0, log_every=50, ckpt_every=10**6, resume=previous is not None)
    train_s = time.time() - t0 + float((previous or {}).get("total_train_seconds", 0.0))
    summary = json.loads((run / "train_summary.json").read_text())
    if previous is None or args.resume:
        summary["total_train_seconds"] = train_s
        (run / "train_summary.json").write_text(json.dumps(summary))
    ref = qm9_reference_smiles()
    results = {"model": args.model, "hidden": args.hidden, "layers": args.layers, "batch_size": args.batch_size,
               "lr": args.lr, "ema_decay": args.ema_decay, "threads": args.threads,
               "train_seconds": round(train_s, 1), "train_steps": summary["step"], "final_loss": summary["loss"],
               "samplers": {}}
    plan = [("ancestral", 1000, args.n_ancestral)] + [(f, 50, args.n_fast) for f in args.fast_samplers.split(",")]
    for sampler, steps, n in plan:
        if n <= 0:
            continue
        t1 = time.time()
        mols = molecules.sample(run=run, n=n, sampler=sampler, steps=steps, seed=1, batch_size=args.sample_batch)
        s_time = time.time() - t1
        molecules.write_molecules(run / f"samples_{sampler}{steps}.sdf", mols)
        metrics = molecules.evaluate(molecules=mols, reference=ref)
        results["samplers"][f"{sampler}-{steps}"] = dict(metrics, sample_seconds=round(s_time, 1))
        print(sampler, steps, metrics, flush=True)
    return results


# ---- (3) recipes: the same CPU-time budget per recipe, scored by the same evaluator ----------------------------------

RECIPES = {  # issue 11's levers, one switch at a time from EDM's recipe (the shipped model's)
    "edm": {},
    "unscaled": dict(feature_scaling=False),
    "flow": dict(schedule="flow", prediction="velocity"),
    "x0_clamped": dict(prediction="x0", weighting="clamped_snr"),
    "v_min_snr": dict(prediction="v", weighting="min_snr:5"),
    "edm_precond": dict(precondition="edm"),
    "formula": dict(composition="formula"),
    "flow_formula": dict(schedule="flow", prediction="velocity", composition="formula"),
    "x0_clamped_formula": dict(prediction="x0", weighting="clamped_snr", composition="formula"),
}


def cpu_seconds_of(run: Path) -> float:
    """Cumulative training CPU seconds on a run's card (0 before its first sitting)."""
    card = run / "card.json"
    return float(json.loads(card.read_text())["training"]["cpu_seconds"] or 0.0) if card.is_file() else 0.0


def train_for_cpu(run: Path, budget_s: float, *, chunk_steps: int = 250, on_chunk=None, **train_kw) -> dict:
    """Train (molecules.train) until the run's cumulative training CPU time reaches `budget_s`: in sittings of at
    most `chunk_steps` steps (the last one sized from the CPU time per step so far), each resuming the checkpoint;
    the Trainer's own time budget is wall-clock, and wall-clock on shared cores is not a fair budget.
    `on_chunk(run, cpu_seconds, steps)` runs after each sitting (the race scores its checkpoints there)."""
    from gendiff.domains import molecules

    while True:
        done = cpu_seconds_of(run)
        card = json.loads((run / "card.json").read_text()) if (run / "card.json").is_file() else None
        steps = int(card["training"]["steps"]) if card else 0
        if done >= budget_s:
            return {"cpu_seconds": done, "steps": steps}
        per_step = done / steps if steps else None
        todo = min(chunk_steps, 50) if per_step is None else max(1, min(chunk_steps,
                                                                         int((budget_s - done) / per_step + 0.5)))
        if card is None and (run / "checkpoint.pt").exists():
            raise SystemExit(f"{run}: a checkpoint without a card (an interrupted first sitting); delete {run}")
        molecules.train(out=run, max_steps=steps + todo, resume=card is not None, progress=False, log_every=50,
                        ckpt_every=10**7, **train_kw)
        if on_chunk is not None:
            on_chunk(run, cpu_seconds_of(run), steps + todo)
        if cpu_seconds_of(run) <= done:
            raise RuntimeError(f"{run}: a sitting added no CPU time; stopping")


def _samplers(spec: str) -> list[tuple[str, int]]:
    out = []
    for item in spec.split(","):
        name, _, steps = item.partition(":")
        out.append((name, int(steps or 50)))
    if any(st > 100 for _, st in out):
        raise SystemExit(f"--samplers {spec}: at most 100 steps (issue 11)")
    return out


def score(run, n: int, samplers, seed: int = 1, batch_size: int = 250) -> dict:
    """EDM's metrics of n molecules per sampler (molecules.measure), plus validity x uniqueness."""
    from gendiff.domains import molecules

    out = {}
    for name, steps in samplers:
        m, _ = molecules.measure(run, n=n, sampler=name, steps=steps, seed=seed, batch_size=batch_size,
                                 device="cpu")
        m["valid_x_unique"] = m["validity"] * m["uniqueness"]
        out[f"{name}-{steps}"] = m
        print(f"  {Path(run).name} {name}-{steps}: atom {m['atom_stability']:.3f} mol {m['molecule_stability']:.3f} "
              f"valid {m['validity']:.3f} VxU {m['valid_x_unique']:.3f}", flush=True)
    return out


def base_train_kw(args) -> dict:
    return dict(data="qm9", model="egnn", hidden=args.hidden, layers=args.layers, batch_size=args.batch_size,
                lr=args.lr, warmup_steps=100, ema_decay=args.ema_decay, seed=0)


def run_recipes(args) -> dict:
    """Each recipe trained for the same CPU time (one thread) from the same seed, then scored the same way."""
    torch.set_num_threads(args.threads)
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"--recipes: unknown {unknown}; known: {', '.join(RECIPES)}")
    samplers = _samplers(args.samplers)
    root = Path(args.root)
    res = {"cpu_budget_s": 60 * args.cpu_minutes, "n": args.n, "samplers": args.samplers, "hidden": args.hidden,
           "layers": args.layers, "batch_size": args.batch_size, "lr": args.lr, "ema_decay": args.ema_decay,
           "threads": args.threads, "recipes": {}}
    for name in names:  # each recipe's result is kept in its run folder: parallel processes can share a root
        run = root / name
        done = run / "recipe_result.json"
        if done.is_file():
            old = json.loads(done.read_text())
            if (old.get("cpu_budget_s"), old.get("n"), old.get("samplers")) == (res["cpu_budget_s"], args.n,
                                                                              args.samplers):
                print(f"recipe {name}: measured already ({done})", flush=True)
                res["recipes"][name] = old["result"]
                continue
        print(f"recipe {name}: {RECIPES[name]}", flush=True)
        t = train_for_cpu(run, 60 * args.cpu_minutes, **base_train_kw(args), **RECIPES[name])
        res["recipes"][name] = {"switches": RECIPES[name], **t, "metrics": score(run, args.n, samplers)}
        done.write_text(json.dumps({"cpu_budget_s": res["cpu_budget_s"], "n": args.n, "samplers": args.samplers,
                                    "result": res["recipes"][name]}, indent=1, default=str))
    key = f"{samplers[0][0]}-{samplers[0][1]}"
    res["winner"] = max(res["recipes"], key=lambda r: (res["recipes"][r]["metrics"][key]["molecule_stability"],
                                                       res["recipes"][r]["metrics"][key]["atom_stability"]))
    return res


# ---- (4) race: gendiff's default recipe against EDM's own code, same data, threads and training CPU time ----------

EDM_MAX_ATOMS = 29


def write_edm_qm9(datadir: Path) -> Path:
    """QM9 from qm9pack (molecules.data) in the files EDM's loader reads: DATADIR/qm9/{train,valid,test}.npz with
    num_atoms, charges (atomic numbers, zero-padded to 29), positions (angstrom, padded) and index, on gendiff's
    split (the EDM/Cormorant split: its train atom-count histogram equals EDM's configs/datasets_config.py)."""
    import numpy as np

    from gendiff.domains.molecules.data import load_qm9_arrays, split_indices
    from gendiff.io import atomic_path

    folder = Path(datadir) / "qm9"
    files = {split: folder / f"{split}.npz" for split in ("train", "valid", "test")}
    if all(f.is_file() for f in files.values()):
        return Path(datadir)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = load_qm9_arrays()
    offsets = arrays["offsets"]
    for split, path in files.items():
        idx = split_indices(split, len(offsets) - 1)
        n = (offsets[idx + 1] - offsets[idx]).astype(np.int64)
        charges = np.zeros((len(idx), EDM_MAX_ATOMS), dtype=np.int64)
        positions = np.zeros((len(idx), EDM_MAX_ATOMS, 3), dtype=np.float32)
        for row, (j, k) in enumerate(zip(idx, n)):
            s0 = int(offsets[j])
            charges[row, :k] = arrays["z"][s0:s0 + k]
            positions[row, :k] = arrays["pos"][s0:s0 + k]
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, num_atoms=n, charges=charges, positions=positions, index=idx.astype(np.int64))
    return Path(datadir)


def edm_molecules(npz: Path) -> list:
    """EDM's samples (the harness's npz) as gendiff molecule records, for gendiff's evaluator."""
    import numpy as np

    from gendiff.domains.molecules.data import molecule_to_data

    f = np.load(npz)
    out, start = [], 0
    for n in f["num_atoms"].tolist():
        out.append(molecule_to_data(f["z"][start:start + n], f["pos"][start:start + n]))
        start += n
    return out


def time_to_reach(curve: list[tuple[float, float]], level: float) -> float | None:
    """CPU hours at which a (hours, value) curve first reaches `level`, interpolated linearly between checkpoints
    (from (0, 0)); None if it never does."""
    prev = (0.0, 0.0)
    for h, v in curve:
        if v >= level:
            if v == prev[1]:
                return h
            return prev[0] + (h - prev[0]) * (level - prev[1]) / (v - prev[1])
        prev = (h, v)
    return None


def run_race(args) -> dict | None:
    """Train both from scratch on QM9's train split with the same threads and training CPU time; score every
    checkpoint with gendiff's evaluator (EDM: its own 1000-step sampler; gendiff: <= 100 steps)."""
    import shutil
    import subprocess

    repo = Path(args.edm_repo) if args.edm_repo else None
    if repo is None or not (repo / "equivariant_diffusion" / "en_diffusion.py").is_file():
        print(f"race skipped: --edm-repo {args.edm_repo!r} is not a checkout of ehoogeboom/e3_diffusion_for_molecules "
              "(git clone it outside this repository and pass its path)", flush=True)
        return None
    torch.set_num_threads(args.threads)
    (sampler, steps), = _samplers(args.sampler)
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    datadir = write_edm_qm9(Path(args.data_cache))
    budget = 60.0 * args.cpu_minutes
    edm_out = root / "edm"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, str(Path(__file__).with_name("_edm_harness.py")), "--edm-repo", str(repo),
           "--datadir", str(datadir), "--out", str(edm_out), "--cpu-seconds", str(budget),
           "--checkpoints", str(args.checkpoints), "--hidden", str(args.hidden), "--layers", str(args.layers),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--ema-decay", str(args.ema_decay),
           "--n-samples", str(args.n), "--threads", str(args.threads)]
    if args.score_existing:
        return race_table(args, root, edm_out, repo, budget, sampler, steps)
    log = open(root / "edm.log", "w")
    bump = max(0, args.nice - os.nice(0))  # EDM at the same niceness as this process (which trains gendiff)
    edm = subprocess.Popen(["nice", "-n", str(bump)] + cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    print("EDM:", " ".join(cmd), flush=True)

    run = root / "gendiff"
    try:
        for k in range(args.checkpoints):
            mark = budget * (k + 1) / args.checkpoints
            t = train_for_cpu(run, mark, **base_train_kw(args))
            keep = root / "gendiff_checkpoints" / str(k)
            keep.mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "weights.safetensors", "card.json"):
                shutil.copy2(run / name, keep / name)
            _gendiff_row(keep, k, args.n, sampler, steps)
            print(f"gendiff checkpoint {k}: {t}", flush=True)
    finally:
        code = edm.wait()
        log.close()
    if code != 0:
        raise SystemExit(f"EDM harness failed (exit {code}); see {root / 'edm.log'}")
    return race_table(args, root, edm_out, repo, budget, sampler, steps)


def _gendiff_row(keep: Path, k: int, n: int, sampler: str, steps: int) -> dict:
    """The score of gendiff's checkpoint k (kept next to it as race_score.json; measured once)."""
    cached = keep / "race_score.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    card = json.loads((keep / "card.json").read_text())["training"]
    m = score(keep, n, [(sampler, steps)])[f"{sampler}-{steps}"]
    row = {"k": k, "cpu_hours": float(card["cpu_seconds"]) / 3600, **m, "train_steps": int(card["steps"])}
    cached.write_text(json.dumps(row, indent=1))
    return row


def race_table(args, root: Path, edm_out: Path, repo: Path, budget: float, sampler: str, steps: int) -> dict:
    """Score what the race left in ROOT (gendiff's kept checkpoints, EDM's sampled checkpoints), the checkpoints
    both reached, into the race's result, race.json and the PNG."""
    from gendiff.domains import molecules

    progress = json.loads((edm_out / "progress.json").read_text())
    kept = sorted((int(d.name), d) for d in (root / "gendiff_checkpoints").iterdir() if (d / "card.json").is_file())
    gendiff_rows = [_gendiff_row(d, k, args.n, sampler, steps) for k, d in kept]
    edm_rows = []
    for c in progress["checkpoints"]:
        m = molecules.evaluate(molecules=edm_molecules(edm_out / f"edm_samples_{c['k']}.npz"))
        m["valid_x_unique"] = m["validity"] * m["uniqueness"]
        edm_rows.append({"k": c["k"], "cpu_hours": c["train_cpu_seconds"] / 3600, **m, "train_steps": c["steps"],
                         "sample_cpu_seconds": round(c["sample_cpu_seconds"], 1), "sampler": "edm-ancestral-1000"})
    both = min(len(gendiff_rows), len(edm_rows))
    if both == 0:
        raise SystemExit(f"{root}: no checkpoint reached by both yet")
    gendiff_rows, edm_rows = gendiff_rows[:both], edm_rows[:both]
    final_g, final_e = gendiff_rows[-1]["atom_stability"], edm_rows[-1]["atom_stability"]
    level = min(final_g, final_e)
    tg = time_to_reach([(r["cpu_hours"], r["atom_stability"]) for r in gendiff_rows], level)
    te = time_to_reach([(r["cpu_hours"], r["atom_stability"]) for r in edm_rows], level)
    res = {"cpu_budget_s": budget, "checkpoints": args.checkpoints, "checkpoints_scored": both, "n": args.n, "sampler": f"{sampler}-{steps}",
           "hidden": args.hidden, "layers": args.layers, "batch_size": args.batch_size, "lr": args.lr,
           "ema_decay": args.ema_decay, "threads": args.threads, "edm_repo_commit": _git_head(repo),
           "edm_parameters": progress["parameters"], "gendiff": gendiff_rows, "edm": edm_rows,
           "level": level, "gendiff_hours_to_level": tg, "edm_hours_to_level": te,
           "ratio_edm_over_gendiff": (te / tg) if tg and te else None}
    (root / "race.json").write_text(json.dumps(res, indent=1, default=str))
    plot_race(res, Path(args.png))
    return res


def _git_head(repo: Path) -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def plot_race(res: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in zip(axes, ("atom_stability", "molecule_stability", "valid_x_unique"),
                              ("atom stability", "molecule stability", "validity x uniqueness")):
        for name, rows, style in (("gendiff (" + res["sampler"] + ")", res["gendiff"], "o-"),
                                  ("EDM (its 1000-step sampler)", res["edm"], "s--")):
            ax.plot([0] + [r["cpu_hours"] for r in rows], [0] + [r[key] for r in rows], style, label=name)
        ax.set_xlabel("training CPU hours (1 thread)")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"QM9, EGNN {res['hidden']}x{res['layers']}, {res['n']} samples per checkpoint", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


from _machine import machine as _machine  # noqa: E402


def _markdown(part: str, res: dict) -> str:
    head = (f"\n### molecules {part} ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
            f"- command: `python {' '.join(sys.argv)}`\n- machine: {_machine()}\n")
    if part == "race":
        if res is None:
            return head + "- skipped: no EDM checkout (--edm-repo)\n"

        def cells(r):
            return (f"{r['train_steps']} | {r['atom_stability']:.3f} | {r['molecule_stability']:.3f} | {r['validity']:.3f}"
                    f" | {r['valid_x_unique']:.3f}")

        rows = "".join(f"| {g['k']} | {g['cpu_hours']:.3f} / {e['cpu_hours']:.3f} | {cells(g)} | {cells(e)} |\n"
                       for g, e in zip(res["gendiff"], res["edm"]))
        tg, te = res["gendiff_hours_to_level"], res["edm_hours_to_level"]
        ratio = (f"**{res['ratio_edm_over_gendiff']:.2f}x** (EDM / gendiff CPU time to reach atom stability "
                 f"{res['level']:.3f}: {te:.3f} h / {tg:.3f} h)") if res["ratio_edm_over_gendiff"] else (
                 f"not defined (times to reach atom stability {res['level']:.3f}: gendiff {tg}, EDM {te})")
        return head + (
            f"- both: EGNN {res['hidden']} features x {res['layers']} layers, batch {res['batch_size']}, lr "
            f"{res['lr']}, EMA {res['ema_decay']}, {res['threads']} thread(s), niced, QM9 train split (gendiff's "
            f"qm9pack data written in EDM's npz format), {res['cpu_budget_s'] / 60:.1f} min of training CPU each, "
            f"run at the same time; EDM = its own code (commit {res['edm_repo_commit']}), its QM9 recipe "
            "(polynomial_2, 1000 steps, l2, 1/4/10, AdamW amsgrad, adaptive clipping, EMA without warm-up); gendiff "
            "= molecules.train defaults\n"
            f"- {res['n']} molecules per checkpoint, all scored by gendiff's evaluator; gendiff samples with "
            f"{res['sampler']}, EDM with its own 1000-step ancestral sampler\n\n"
            "| ckpt | CPU h gendiff / EDM | gendiff steps | atom | mol | valid | VxU | EDM steps | atom | mol | "
            "valid | VxU |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n" + rows +
            f"\nCPU-time ratio to the same atom stability: {ratio}\n")
    if part == "recipes":
        keys = list(next(iter(res["recipes"].values()))["metrics"])
        rows = ""
        for name, r in res["recipes"].items():
            cells = " | ".join(f"{r['metrics'][k]['atom_stability']:.3f} / {r['metrics'][k]['molecule_stability']:.3f}"
                               f" / {r['metrics'][k]['validity']:.3f} / {r['metrics'][k]['valid_x_unique']:.3f}"
                               for k in keys)
            sw = ", ".join(f"{k}={v}" for k, v in r["switches"].items()) or "EDM's (polynomial VP, eps, 1/4/10)"
            rows += f"| {name} | {sw} | {r['steps']} | {r['cpu_seconds'] / 60:.1f} | {cells} |\n"
        return head + (
            f"- EGNN {res['hidden']} features x {res['layers']} layers, batch {res['batch_size']}, lr {res['lr']} "
            f"(warm-up 100), EMA {res['ema_decay']}, seed 0, {res['threads']} thread(s), niced; each recipe trained "
            f"until its cumulative training CPU time reached {res['cpu_budget_s'] / 60:.1f} min (sittings of <= 250 "
            f"steps, resumed), then {res['n']} molecules per sampler (seed 1) scored by EDM's metrics\n"
            "- cells: atom stability / molecule stability / validity / validity x uniqueness\n\n"
            f"| recipe | switches | steps | CPU min | {' | '.join(keys)} |\n|---|---|---|---|"
            + "---|" * len(keys) + "\n" + rows + f"\nWinner (molecule, then atom stability, {keys[0]}): "
            f"**{res['winner']}**\n")
    if part == "speed":
        return head + _speed_markdown(res)
    rows = "".join(
        f"| {name} | {m['n']} | {m['atom_stability']:.3f} | {m['molecule_stability']:.3f} | {m['validity']:.3f} | "
        f"{m['connected_validity']:.3f} | "
        f"{m['uniqueness']:.3f} | {m['novelty'] if m['novelty'] is None else round(m['novelty'], 3)} | "
        f"{m['sample_seconds']} |\n" for name, m in res["samplers"].items())
    return head + (
        f"- model: {res['model']} ({res['hidden']} features, {res['layers']} layers), batch {res['batch_size']}, "
        f"trained {res['train_steps']} steps in {res['train_seconds']} s in total (final loss "
        f"{res['final_loss']:.4g}), lr {res['lr']}, EMA {res['ema_decay']}, {res['threads']} thread(s), cores shared "
        "with other jobs\n\n"
        "| sampler | N | atom stab. | mol. stab. | validity | connected valid | uniqueness | novelty | sampling s |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="part", required=True)
    s = sub.add_parser("speed", help="train steps/s: factored EGNN, concatenated EGNN, dense reference")
    s.add_argument("--configs", default="edm,cpu",
                   help="comma-separated: edm (256 x 9, EDM's QM9), cpu (64 x 4, pretrained:qm9) or HIDDENxLAYERS")
    s.add_argument("--impls", default="factored,concat,dense",
                   help=f"comma-separated subset of {', '.join(SPEED_IMPLS)}")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--rounds", type=int, default=3, help="alternated rounds; medians over rounds are reported")
    s.add_argument("--steps", type=int, default=2, help="training steps per implementation per round (batches)")
    s.add_argument("--threads", type=int, default=1,
                   help="torch threads (2: both cores here; on loaded cores set OMP_WAIT_POLICY=PASSIVE, else idle "
                        "OpenMP threads spin and burn CPU time)")
    s.add_argument("--lr", type=float, default=1e-4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-record", action="store_true", help="do not append to results_molecules.md (smoke runs)")
    q = sub.add_parser("quality")
    q.add_argument("--run", default="runs/bench_molecules")
    q.add_argument("--model", default="egnn")
    q.add_argument("--hidden", type=int, default=64)
    q.add_argument("--layers", type=int, default=4)
    q.add_argument("--batch-size", type=int, default=64)
    q.add_argument("--lr", type=float, default=5e-4)
    q.add_argument("--ema-decay", type=float, default=0.995)
    q.add_argument("--train-minutes", type=float, default=12.0)
    q.add_argument("--resume", action="store_true", help="continue training an existing --run for --train-minutes")
    q.add_argument("--n-ancestral", type=int, default=200)
    q.add_argument("--n-fast", type=int, default=1000)
    q.add_argument("--fast-samplers", default="heun,dpm_solver_pp", help="comma-separated 50-step samplers")
    q.add_argument("--sample-batch", type=int, default=250)
    q.add_argument("--threads", type=int, default=1, help="1: OpenMP threads spin badly on shared, loaded cores")
    r = sub.add_parser("recipes", help="recipe switches, each trained for the same CPU time, scored the same way")
    r.add_argument("--recipes", default="edm,unscaled,flow,x0_clamped,formula", help=f"of {', '.join(RECIPES)}")
    r.add_argument("--cpu-minutes", type=float, default=7.0, help="training CPU time per recipe")
    r.add_argument("--n", type=int, default=300, help="molecules sampled per recipe and sampler")
    r.add_argument("--samplers", default="dpm_solver_pp:50,ancestral:100", help="NAME:STEPS,... (<= 100 steps)")
    r.add_argument("--root", default="runs/bench_recipes",
                   help="one run folder per recipe; a recipe measured there with the same budget is reused")
    r.add_argument("--no-record", action="store_true", help="do not append to results_molecules.md (partial runs)")
    c = sub.add_parser("race", help="gendiff's default recipe against EDM's own code, same training CPU time")
    c.add_argument("--edm-repo", default=None, help="a local checkout of ehoogeboom/e3_diffusion_for_molecules")
    c.add_argument("--cpu-minutes", type=float, default=60.0, help="training CPU time of each")
    c.add_argument("--checkpoints", type=int, default=6, help="checkpoints (equally spaced in CPU time) scored")
    c.add_argument("--n", type=int, default=1000, help="molecules sampled per checkpoint")
    c.add_argument("--sampler", default="dpm_solver_pp:50", help="gendiff's sampler NAME:STEPS (<= 100 steps)")
    c.add_argument("--root", default="runs/race_molecules", help="both runs, checkpoints and samples")
    c.add_argument("--data-cache", default="runs/edm_qm9_data", help="QM9 in EDM's npz format (written once)")
    c.add_argument("--png", default=str(Path(__file__).with_name("molecules_race.png")))
    c.add_argument("--score-existing", action="store_true",
                   help="train nothing: score the checkpoints an earlier (or interrupted) race left in --root")
    c.add_argument("--nice", type=int, default=10, help="niceness of the EDM process (at least this process's)")
    for sp in (r, c):
        sp.add_argument("--hidden", type=int, default=64)
        sp.add_argument("--layers", type=int, default=4)
        sp.add_argument("--batch-size", type=int, default=64)
        sp.add_argument("--lr", type=float, default=5e-4)
        sp.add_argument("--ema-decay", type=float, default=0.995)
        sp.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    parts = {"speed": run_speed, "quality": run_quality, "recipes": run_recipes, "race": run_race}
    res = parts[args.part](args)
    print(json.dumps(res, indent=1, default=str))
    text = _markdown(args.part, res)
    if not getattr(args, "no_record", False):
        with open(RESULTS, "a") as fh:
            fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
