"""benchmarks/molecules.py speed: train steps per second of the factored and concatenated sparse EGNN and a dense
padded reference, at EDM's QM9 configuration and the CPU one, alternated in one run."""
from __future__ import annotations

import os
import time

import torch


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
