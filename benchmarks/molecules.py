"""Molecule benchmark: (1) EGNN training speed, ours (sparse, vectorised edges) vs a dense padded reference at EDM's QM9
configuration; (2) EDM's four metrics after the training this machine allows, ancestral 1000 steps vs a 50-step ODE.

    python benchmarks/molecules.py speed   --rounds 3 --steps 2
    python benchmarks/molecules.py quality --train-minutes 12 --n-ancestral 200 --n-fast 1000
    python benchmarks/molecules.py recipes --cpu-minutes 7 --n 300        # (3) recipe switches, same CPU budget
    python benchmarks/molecules.py race --edm-repo /tmp/edm --cpu-minutes 60 --checkpoints 6   # (4) gendiff vs EDM
Results are appended to benchmarks/results_molecules.md (command, machine, date).
"""
from __future__ import annotations

import argparse
import datetime
import json
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


def _batches(n_batches: int, batch_size: int, seed: int):
    from torch_geometric.data import Batch
    from torch_geometric.utils import to_dense_batch

    from gendiff.domains.molecules.data import load_qm9
    from gendiff.domains.molecules.model import encode

    ds = load_qm9(split="train")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        idx = torch.randperm(len(ds), generator=gen)[:batch_size].tolist()
        x0, batch = encode(Batch.from_data_list([ds[i] for i in idx]))
        x = x0 + 0.5 * torch.randn(x0.shape, generator=gen)
        t = torch.rand(batch_size, generator=gen)[batch]
        target = torch.randn(x0.shape, generator=gen)
        xd, mask = to_dense_batch(x, batch)
        out.append(dict(x=x, t=t, batch=batch, target=target, xd=xd, td=to_dense_batch(t, batch)[0], mask=mask,
                        targetd=to_dense_batch(target, batch)[0]))
    return out


def run_speed(args) -> dict:
    """Alternate training steps (forward, MSE, backward, Adam) of ours and the dense reference on the same batches."""
    from gendiff.domains.molecules.model import build_net

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = build_net("egnn", hidden_nf=args.hidden, n_layers=args.layers)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    batches = _batches(args.steps, args.batch_size, seed=0)
    with torch.no_grad():  # the dense reference must compute the same function
        b = batches[0]
        ours = net(b["x"], b["t"], mask=b["batch"])
        dense = dense_egnn_forward(net, b["xd"], b["td"], b["mask"])[b["mask"]]
        max_diff = float((ours - dense).abs().max())

    def step_ours(b):
        loss = ((net(b["x"], b["t"], mask=b["batch"]) - b["target"]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def step_dense(b):
        out = dense_egnn_forward(net, b["xd"], b["td"], b["mask"])
        loss = (((out - b["targetd"]) ** 2) * b["mask"][..., None]).sum() / (b["mask"].sum() * out.shape[-1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {"ours": [], "dense": []}
    cpu = {"ours": [], "dense": []}
    step_ours(batches[0])  # warm-up both paths once
    step_dense(batches[0])
    for r in range(args.rounds):
        order = [("ours", step_ours), ("dense", step_dense)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            for b in batches:
                fn(b)
            times[name].append((time.perf_counter() - t0) / len(batches))
            cpu[name].append((time.process_time() - c0) / len(batches))
            print(f"round {r} {name}: {times[name][-1]:.3f} s/step wall, {cpu[name][-1]:.3f} s/step CPU", flush=True)
    wall = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    sec = {k: sorted(v)[len(v) // 2] for k, v in cpu.items()}
    atoms = sum(int(b["batch"].numel()) for b in batches) / len(batches)
    return {"hidden": args.hidden, "layers": args.layers, "batch_size": args.batch_size, "threads": args.threads,
            "mean_atoms_per_batch": atoms, "padded_atoms_per_batch": float(batches[0]["xd"].shape[1] * args.batch_size),
            "ours_steps_per_s": 1 / sec["ours"], "dense_steps_per_s": 1 / sec["dense"],
            "speedup": sec["dense"] / sec["ours"], "wall_ours_steps_per_s": 1 / wall["ours"],
            "wall_dense_steps_per_s": 1 / wall["dense"], "wall_speedup": wall["dense"] / wall["ours"],
            "rounds": args.rounds, "steps_per_round": args.steps, "max_abs_output_diff": max_diff,
            "wall_times_s": times, "cpu_times_s": cpu}


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
        todo = chunk_steps if per_step is None else max(1, min(chunk_steps, int((budget_s - done) / per_step + 0.5)))
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
    for name in names:
        run = root / name
        print(f"recipe {name}: {RECIPES[name]}", flush=True)
        t = train_for_cpu(run, 60 * args.cpu_minutes, **base_train_kw(args), **RECIPES[name])
        res["recipes"][name] = {"switches": RECIPES[name], **t, "metrics": score(run, args.n, samplers)}
        (root / "recipes.json").write_text(json.dumps(res, indent=1, default=str))
    key = f"{samplers[0][0]}-{samplers[0][1]}"
    res["winner"] = max(res["recipes"], key=lambda r: (res["recipes"][r]["metrics"][key]["molecule_stability"],
                                                       res["recipes"][r]["metrics"][key]["atom_stability"]))
    return res


from _machine import machine as _machine  # noqa: E402


def _markdown(part: str, res: dict) -> str:
    head = (f"\n### molecules {part} ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
            f"- command: `python {' '.join(sys.argv)}`\n- machine: {_machine()}\n")
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
        return head + (
            f"- EGNN {res['hidden']} features, {res['layers']} layers, batch {res['batch_size']} QM9 molecules "
            f"({res['mean_atoms_per_batch']:.0f} atoms, padded {res['padded_atoms_per_batch']:.0f}), "
            f"{res['threads']} thread(s), {res['rounds']} alternated rounds x {res['steps_per_round']} steps, median; "
            "a training step = forward, MSE, backward, Adam. The cores are shared with other jobs, so process CPU time "
            "(time.process_time) is the primary measure; wall-clock is shown for reference.\n\n"
            "| implementation | train steps/s (CPU time) | train steps/s (wall) |\n|---|---|---|\n"
            f"| gendiff EGNN (sparse edges, index_add_) | {res['ours_steps_per_s']:.4f} | "
            f"{res['wall_ours_steps_per_s']:.4f} |\n"
            f"| dense padded reference (B, N, N) | {res['dense_steps_per_s']:.4f} | "
            f"{res['wall_dense_steps_per_s']:.4f} |\n"
            f"| **ratio ours / dense** | **{res['speedup']:.2f}x** | {res['wall_speedup']:.2f}x |\n\n"
            f"Same weights in both; max |output difference| on real atoms = {res['max_abs_output_diff']:.2e}.\n")
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
    s = sub.add_parser("speed")
    s.add_argument("--hidden", type=int, default=256)
    s.add_argument("--layers", type=int, default=9)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--steps", type=int, default=2)
    s.add_argument("--threads", type=int, default=1)
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
    r.add_argument("--root", default="runs/bench_recipes", help="one run folder per recipe (resumed if present)")
    for sp in (r,):
        sp.add_argument("--hidden", type=int, default=64)
        sp.add_argument("--layers", type=int, default=4)
        sp.add_argument("--batch-size", type=int, default=64)
        sp.add_argument("--lr", type=float, default=5e-4)
        sp.add_argument("--ema-decay", type=float, default=0.995)
        sp.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    parts = {"speed": run_speed, "quality": run_quality, "recipes": run_recipes}
    res = parts[args.part](args)
    print(json.dumps(res, indent=1, default=str))
    text = _markdown(args.part, res)
    with open(RESULTS, "a") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
