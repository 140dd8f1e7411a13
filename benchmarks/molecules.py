"""Molecule benchmark: (1) EGNN training speed, ours (sparse, vectorised edges) vs a dense padded reference at EDM's QM9
configuration; (2) EDM's four metrics after the training this machine allows, ancestral 1000 steps vs a 50-step ODE.

    python benchmarks/molecules.py speed   --rounds 3 --steps 2
    python benchmarks/molecules.py quality --train-minutes 12 --n-ancestral 200 --n-fast 1000
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


from _machine import machine as _machine  # noqa: E402


def _markdown(part: str, res: dict) -> str:
    head = (f"\n### molecules {part} ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
            f"- command: `python {' '.join(sys.argv)}`\n- machine: {_machine()}\n")
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
    args = p.parse_args(argv)
    res = run_speed(args) if args.part == "speed" else run_quality(args)
    print(json.dumps(res, indent=1, default=str))
    text = _markdown(args.part, res)
    with open(RESULTS, "a") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
