"""Images benchmarks: `speed` (our U-Net vs diffusers' UNet2DModel), `quality` (time-budgeted MNIST training) and
`variance` (fixed against learned reverse variance).

    python benchmarks/images.py speed   [--device cpu] [--batch 16] [--rounds 15]
    python benchmarks/images.py quality [--minutes 30] [--n 1000] [--n-ancestral 1000] [--guidance 3]
    python benchmarks/images.py variance [--minutes 10] [--which fixed|learned|both] [--n 200] [--nll-n 200]

variance trains the quality recipe twice at the same time budget, fixed variance (L_simple) against learned
variance (Improved DDPM: hybrid loss), and reports bits/dim and ancestral sampling at 25, 50 and 100 steps; run
`--which fixed` and `--which learned` as two processes to train both at once (one core each), then
`--report-only` to write the table from both JSONs.

Each part writes its section of benchmarks/results/images.md (command, machine, date, numbers) and a JSON beside it
in benchmarks/results/. The shipped model pretrained:mnist is exported from a quality run by
tools/export_images_pretrained.py.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "images.md"
SPEED_MODEL = dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1, groups=32)
QUALITY_MODEL = dict(ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=(7,), dropout=0.0, groups=8)


from _machine import machine  # noqa: E402  (python puts the script's folder, benchmarks/, on sys.path)
from _results import write_block  # noqa: E402


def write_section(name: str, body: str) -> None:
    """Replace the <!-- name --> ... <!-- /name --> block of results/images.md (add it when absent)."""
    write_block(RESULTS, body, block=name, title="# Images benchmarks (benchmarks/images.py)")


# ---------------------------------------------------------------------------------------------------------- speed
def diffusers_twin(cfg: dict, resolution: int, channels: int, num_classes: int):
    """diffusers UNet2DModel with the same layout: levels, blocks per level, attention levels, one head, class embeds."""
    from diffusers import UNet2DModel

    res, down, up = resolution, [], []
    for mult in cfg["ch_mult"]:
        down.append("AttnDownBlock2D" if res in cfg["attn_resolutions"] else "DownBlock2D")
        res //= 2
    up = [b.replace("Down", "Up") for b in reversed(down)]
    width = [cfg["ch"] * m for m in cfg["ch_mult"]]
    return UNet2DModel(sample_size=resolution, in_channels=channels, out_channels=channels, down_block_types=down,
                       up_block_types=up, block_out_channels=width, layers_per_block=cfg["num_res_blocks"],
                       attention_head_dim=max(width), norm_num_groups=cfg["groups"], norm_eps=1e-6,
                       dropout=cfg["dropout"], num_class_embeds=num_classes + 1)


class DiffusersNet(torch.nn.Module):
    """Adapter: gendiff's net(x_t, t, *, mask, cond) signature over UNet2DModel (t in [0, 1] -> 0..1000)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t, *, mask=None, cond=None):
        return self.model(x, t * 1000.0, class_labels=cond).sample


def speed(args) -> dict:
    from gendiff.forward import Denoiser
    from gendiff.domains.images.api import make_step_fn
    from gendiff.domains.images.data import load_data, to_model
    from gendiff.domains.images.unet import UNet, UNetConfig
    from gendiff.samplers import sample
    from gendiff.schedules import get_schedule
    from gendiff.spaces import EuclideanSpace

    dev = torch.device(args.device)
    torch.manual_seed(0)
    data = load_data("mnist", "train")
    cfg = dict(SPEED_MODEL)
    ours = UNet(UNetConfig(in_channels=1, resolution=32, num_classes=10, **cfg))
    theirs = DiffusersNet(diffusers_twin(cfg, 32, 1, 10))
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))
    schedule, space = get_schedule("linear"), EuclideanSpace()
    step_fn = make_step_fn(schedule, 10, 0.1)
    models = {}
    for name, net in (("gendiff", ours), ("diffusers", theirs)):
        net = net.to(dev)
        if args.channels_last:
            net = net.to(memory_format=torch.channels_last)
        den = Denoiser(net, schedule)
        models[name] = (den, torch.optim.AdamW(den.parameters(), lr=1e-4))
    x0, labels = to_model(data.images[:args.batch]).to(dev), data.labels[:args.batch].to(dev)
    if args.channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    gens = {k: torch.Generator(device=dev).manual_seed(0) for k in models}
    x_T = torch.randn(x0.shape, generator=torch.Generator(device=dev).manual_seed(1), device=dev)

    def train_step(name) -> float:
        """Seconds for one optimizer step (loss, backward, AdamW) on the shared batch."""
        den, opt = models[name]
        den.train()
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = step_fn(den, (x0, labels), gens[name])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        return time.perf_counter() - t0

    def sample_steps(name) -> float:
        """Seconds per sampler step of a core DDIM run of --sample-steps steps (conditional, no guidance)."""
        den, _ = models[name]
        den.eval()
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
            sample("ddim", den, x_T, schedule, space, args.sample_steps, cond=labels, generator=gens[name])
        sync()
        return (time.perf_counter() - t0) / args.sample_steps

    for name in models:  # warm-up (allocator, oneDNN kernels)
        train_step(name)
        sample_steps(name)
    rows = {k: {"train": [], "sample": []} for k in models}
    for r in range(args.rounds):
        order = ("gendiff", "diffusers") if r % 2 == 0 else ("diffusers", "gendiff")
        for kind, fn in (("train", train_step), ("sample", sample_steps)):
            for name in order:
                rows[name][kind].append(fn(name))
        print(f"round {r}: " + ", ".join(f"{k} train {v['train'][-1]:.2f} s/step, sample {v['sample'][-1]:.3f} s/step"
                                          for k, v in rows.items()), file=sys.stderr, flush=True)
    ratio = lambda kind: [b / a for a, b in zip(rows["gendiff"][kind], rows["diffusers"][kind])]  # noqa: E731
    total = lambda kind: sum(rows["diffusers"][kind]) / sum(rows["gendiff"][kind])  # noqa: E731
    out = {
        "device": machine(dev), "batch": args.batch, "rounds": args.rounds, "params_gendiff": n_ours,
        "params_diffusers": n_theirs, "param_ratio": n_ours / n_theirs, "config": cfg,
        "train_img_per_s": {k: args.batch / statistics.median(v["train"]) for k, v in rows.items()},
        "sample_steps_per_s": {k: 1.0 / statistics.median(v["sample"]) for k, v in rows.items()},
        "train_ratio_median": statistics.median(ratio("train")), "train_ratios": ratio("train"),
        "sample_ratio_median": statistics.median(ratio("sample")), "sample_ratios": ratio("sample"),
        "train_ratio_total": total("train"), "sample_ratio_total": total("sample"),
        "bf16": args.bf16, "channels_last": args.channels_last,
    }
    body = [
        "## Speed: gendiff U-Net vs diffusers 0.42 UNet2DModel",
        f"- command: `python {' '.join(sys.argv)}`",
        f"- machine: {out['device']}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- config: {cfg}, 32x32x1, 10 classes + null; parameters gendiff {n_ours:,} vs diffusers {n_theirs:,} "
        f"(ratio {out['param_ratio']:.4f}); batch {args.batch}; same MNIST batch, same loss (core eps-loss with "
        f"label dropout), AdamW; sampling = core DDIM, {args.sample_steps} steps, conditional; "
        f"{args.rounds} rounds, each timing one training step and one sampling run of each model back to back "
        f"(order alternating), after one warm-up of each; rates are medians, ratios the median of per-round ratios "
        f"(and total time ratio)",
        "",
        "| | gendiff | diffusers | ratio (gendiff / diffusers) |",
        "|---|---|---|---|",
        f"| training images/s | {out['train_img_per_s']['gendiff']:.1f} | {out['train_img_per_s']['diffusers']:.1f} | "
        f"**{out['train_ratio_median']:.3f}** (total-time ratio {out['train_ratio_total']:.3f}) |",
        f"| sampling steps/s | {out['sample_steps_per_s']['gendiff']:.2f} | {out['sample_steps_per_s']['diffusers']:.2f}"
        f" | **{out['sample_ratio_median']:.3f}** (total-time ratio {out['sample_ratio_total']:.3f}) |",
        "",
        "No GPU was available in this session, so only the CPU goal (ratio >= 1.0) was measured; the same command "
        "with `--device cuda --bf16 --channels-last` measures the GPU path.",
    ]
    write_section("speed", "\n".join(body))
    (HERE / "results" / "images_speed.json").write_text(json.dumps(out, indent=2))
    return out


# -------------------------------------------------------------------------------------------------------- quality
def quality(args) -> dict:
    from gendiff.domains.images import evaluate, train

    run = Path(args.run)
    t0 = time.perf_counter()
    if args.eval_only:
        if (run / "card.json").is_file():
            card = json.loads((run / "card.json").read_text())
            summary = {"step": card["training"]["steps"], "wall_seconds": card["training"]["wall_seconds"],
                       "parameters": card["parameters"]}
        else:  # a run of the format before gendiff.runs
            summary = json.loads((run / "train_summary.json").read_text())
    else:
        summary = train("mnist", run, image_size=args.image_size, model=QUALITY_MODEL, max_steps=10**6, time_budget=60 * args.minutes,
                        batch_size=args.batch, lr=args.lr, warmup_steps=100, ema_decay=args.ema, progress=False,
                        ckpt_every=500, log_every=50, resume="auto")
    train_s = summary["wall_seconds"]
    print(f"trained {summary['step']} steps in {train_s:.0f} s", file=sys.stderr, flush=True)
    results = []
    plan = [("ddim", 50, args.n), ("dpm_solver_pp", 20, args.n), ("ancestral", 1000, args.n_ancestral)]
    plan = [p for p in plan if p[0] in args.samplers.split(",")]
    mine = HERE / "results" / f"images_quality{args.tag}.json"
    for i, (sampler, steps, n) in enumerate(plan):
        if n <= 0:
            continue
        m = evaluate(run, n=n, sampler=sampler, steps=steps, guidance=args.guidance, seed=0,
                     unconditional_n=args.n_uncond if sampler == "ddim" else 0, reference=True,
                     samples_png=HERE / "results" / f"images_{sampler}.png" if args.png else None,
                     nll_n=args.nll_n if sampler == "ddim" else 0, compile=args.compile,
                     cache=args.cache, batch_size=args.sample_batch)
        results.append(m)
        print(json.dumps(m), file=sys.stderr, flush=True)
        mine.write_text(json.dumps({"train": summary, "results": results, "argv": sys.argv}, indent=2))
        everything = [m for f in sorted((HERE / "results").glob("images_quality*.json"))
                      for m in json.loads(f.read_text())["results"] if m["run"] == str(run)]
        everything.sort(key=lambda m: ("ddim", "dpm_solver_pp", "ancestral").index(m["sampler"]))
        write_quality(args, summary, train_s, everything, pending=[p for p in plan[i + 1:] if p[2] > 0])
    return {"train": summary, "results": results}


def write_quality(args, summary: dict, train_s: float, results: list, pending: list) -> None:
    ref = results[0]
    body = [
        f"## Quality: embedded MNIST (5,000 digits, {args.image_size}x{args.image_size}; 4,000 train / 1,000 held out), "
        "CPU, time-budgeted",
        f"- command: `python {' '.join(sys.argv)}`"
        + (" (training by the same command without --eval-only, stopped once training had finished)"
           if args.eval_only else ""),
        f"- machine: {machine(torch.device('cpu'))}" + (f"; {args.note}" if args.note else ""),
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- model: {QUALITY_MODEL}, {summary['parameters']:,} parameters, linear schedule (T=1000), eps-prediction, "
        f"label dropout 0.1; trained {summary['step']} steps x batch {args.batch} in {train_s / 60:.1f} min "
        f"(budget {args.minutes} min), EMA {args.ema}",
        f"- classifier (held-out accuracy {ref['classifier_test_accuracy']:.3f}) features: 128-d; FD/KID against the "
        f"1,000 held-out images; guidance scale {args.guidance} (diffusers convention); samples balanced over classes",
        "",
        "| sampler | steps | samples | conditional accuracy | FD | KID | FD real halves (500 vs 500) | "
        "FD real train vs held-out (same n) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in results:
        body.append(f"| {m['sampler']} | {m['steps']} | {m['n']} | {m['conditional_accuracy']:.3f} | {m['fd']:.2f} | "
                    f"{m['kid']:.4f} | {m['fd_real_halves']:.2f} | {m['fd_real_train_vs_test']:.2f} |")
    extra = [m for m in results if "class_entropy" in m]
    if extra:
        m = extra[0]
        body.append(f"\nUnconditional samples ({m['unconditional_n']}, {m['sampler']} {m['steps']}): predicted-class "
                    f"entropy {m['class_entropy']:.3f} nats ({m['class_entropy_normalized']:.3f} of log 10), "
                    f"FD {m['fd_unconditional']:.2f}.")
        if "nll_bits_per_dim" in m:
            body.append(f"NLL bound on {m['nll_n']} held-out images: {m['nll_bits_per_dim']:.3f} bits/dim.")
    best = max(m["conditional_accuracy"] for m in results)
    body.append(f"\nGoal (>= 0.90 conditional accuracy): {'met' if best >= 0.9 else 'NOT met'} "
                f"(best {best:.3f}).")
    if pending:
        body.append("\nStill running when this was written: " + ", ".join(f"{p[0]} {p[1]} steps" for p in pending))
    write_section("quality", "\n".join(body))


# ------------------------------------------------------------------------------------------------------- variance
VARIANCE_ARMS = {"fixed": False, "learned": True}  # arm -> learn_sigma


def variance_json(arm: str) -> Path:
    return HERE / "results" / f"images_variance_{arm}.json"


def variance(args) -> dict:
    """Fixed against learned reverse variance (Nichol & Dhariwal 2021) at one training budget: each arm trains the
    quality recipe (QUALITY_MODEL, 28x28 embedded MNIST, same seed, batch, lr, EMA and time budget); 'fixed' with
    L_simple (eps-loss), 'learned' with the hybrid loss (2C output channels, lambda 0.001, discretized decoder).
    Each is then measured by the domain's evaluate: bits/dim on the first --nll-n held-out digits (its variational
    bound, with the learned variance where there is one), and conditional accuracy / FD of --n guided samples at
    each of --steps ancestral steps (strided grids of the 1000 training steps; the fixed arm uses the posterior
    variance beta~, the sampler's default for it, the learned arm its learned variance, rescaled to the grid)."""
    from gendiff.domains.images import evaluate, train

    arms = list(VARIANCE_ARMS) if args.which == "both" else [args.which]
    out = {}
    for arm in ([] if args.report_only else arms):
        run = Path(f"{args.run_prefix}_{arm}")
        t0 = time.perf_counter()
        summary = train("mnist", run, image_size=28, model=QUALITY_MODEL, learn_sigma=VARIANCE_ARMS[arm],
                        max_steps=10**6, time_budget=60 * args.minutes, batch_size=args.batch, lr=args.lr,
                        warmup_steps=100, ema_decay=args.ema, progress=False, ckpt_every=500, log_every=50,
                        resume="auto", seed=0)
        print(f"{arm}: trained {summary['step']} steps in {summary['wall_seconds']:.0f} s", file=sys.stderr,
              flush=True)
        card = json.loads((run / "card.json").read_text())
        record = {"arm": arm, "run": str(run), "learn_sigma": VARIANCE_ARMS[arm], "guidance": args.guidance, "steps_trained": summary["step"],
                  "train_seconds": card["training"]["wall_seconds"], "parameters": summary["parameters"],
                  "final_loss": summary.get("loss"), "argv": sys.argv, "results": []}
        for i, steps in enumerate(args.steps):
            m = evaluate(run, n=args.n, sampler="ancestral", steps=steps, guidance=args.guidance, seed=0,
                         unconditional_n=0, reference=i == 0, nll_n=args.nll_n if i == 0 else 0,
                         batch_size=args.sample_batch)
            if i == 0:
                record.update(nll_bits_per_dim=m["nll_bits_per_dim"], nll_n=m["nll_n"],
                              classifier_test_accuracy=m["classifier_test_accuracy"],
                              fd_real_train_vs_test=m["fd_real_train_vs_test"], fd_real_halves=m["fd_real_halves"])
            record["results"].append({k: m[k] for k in ("steps", "n", "conditional_accuracy", "fd", "kid",
                                                        "seconds")})
            print(json.dumps({"arm": arm, **record["results"][-1]}), file=sys.stderr, flush=True)
            variance_json(arm).write_text(json.dumps(record, indent=2))
        record["eval_seconds"] = time.perf_counter() - t0 - summary["wall_seconds"]
        variance_json(arm).write_text(json.dumps(record, indent=2))
        out[arm] = record
        write_variance(args)
    if args.report_only:
        write_variance(args)
    return out


def write_variance(args) -> None:
    records = {a: json.loads(variance_json(a).read_text()) for a in VARIANCE_ARMS if variance_json(a).is_file()}
    if not records:
        return
    any_ = next(iter(records.values()))
    argvs = sorted({shlex.join(r["argv"]) for r in records.values()})
    steps = sorted({m["steps"] for r in records.values() for m in r["results"]})
    body = [
        "## Variance: fixed (L_simple) vs learned (hybrid loss, Improved DDPM) on embedded MNIST, same budget",
        "- command" + ("s" if len(argvs) > 1 else "") + ": " + "; ".join(f"`python {a}`" for a in argvs)
        + (" (run as two processes at once, one torch thread each, then `--report-only`)" if len(argvs) > 1 else ""),
        f"- machine: {machine(torch.device('cpu'))}" + (f"; {args.note}" if args.note else ""),
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- model: quality recipe {QUALITY_MODEL} at 28x28 (4,000 train / 1,000 held-out digits), linear schedule "
        f"(T=1000), eps-prediction, label dropout 0.1, batch {args.batch}, lr {args.lr}, EMA {args.ema}, seed 0; "
        f"each arm trained for the same wall-clock budget of {args.minutes:g} min (a small budget: the shipped "
        "pretrained:mnist had 40 min). Learned: 2x output channels (v head zero-initialised, so v starts at 0), "
        "L_simple + 0.001 T L_vlb with the mean's gradient stopped and the discretized decoder at t=1",
        f"- bits/dim: the domain's variational bound (evaluate nll_n) on the first {any_.get('nll_n', '?')} held-out "
        "digits (32 random timesteps per image, discretized decoder), with each arm's own reverse variance. "
        f"Sampling: ancestral on strided grids of the 1000 training steps, guidance {any_.get('guidance', args.guidance):g} "
        f"(diffusers convention), {any_['results'][0]['n']} class-balanced samples per cell, same seed; fixed arm "
        "with the posterior variance beta~ (the sampler's default for it), learned arm with its learned variance "
        "rescaled to the grid. Accuracy and FD by the held-out classifier "
        f"(test accuracy {any_.get('classifier_test_accuracy', float('nan')):.3f}; 128-d features, FD against the "
        f"1,000 held-out digits; real train vs held-out FD at the same n: {any_.get('fd_real_train_vs_test', float('nan')):.2f})",
        "",
        "| variance | trained steps | bits/dim | " + " | ".join(f"acc @ {s}" for s in steps) + " | "
        + " | ".join(f"FD @ {s}" for s in steps) + " |",
        "|---|---|---|" + "---|" * (2 * len(steps)),
    ]
    for arm, r in records.items():
        by = {m["steps"]: m for m in r["results"]}
        cell = lambda s, k, f: format(by[s][k], f) if s in by else "pending"  # noqa: E731
        bpd = f"{r['nll_bits_per_dim']:.3f}" if "nll_bits_per_dim" in r else "pending"
        body.append(f"| {arm}{' (hybrid)' if r['learn_sigma'] else ' (L_simple, beta~)'} | {r['steps_trained']} "
                    f"({r['train_seconds'] / 60:.1f} min) | {bpd} | "
                    + " | ".join(cell(s, "conditional_accuracy", ".3f") for s in steps) + " | "
                    + " | ".join(cell(s, "fd", ".2f") for s in steps) + " |")
    body.append(f"\nOne seed and {any_['results'][0]['n']} samples per cell: differences of a few points of accuracy "
                "or a few FD units are within the noise of this measurement.")
    write_section("variance", "\n".join(body))
    print("\n".join(body))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--rounds", type=int, default=15)
    s.add_argument("--sample-steps", type=int, default=2)
    s.add_argument("--bf16", action="store_true")
    s.add_argument("--channels-last", action="store_true")
    s.add_argument("--threads", type=int, default=None)
    q = sub.add_parser("quality")
    q.add_argument("--run", default="runs/bench_images_mnist")
    q.add_argument("--minutes", type=float, default=30.0)
    q.add_argument("--batch", type=int, default=64)
    q.add_argument("--lr", type=float, default=1e-3)
    q.add_argument("--ema", type=float, default=0.995)
    q.add_argument("--guidance", type=float, default=3.0)
    q.add_argument("--n", type=int, default=1000)
    q.add_argument("--n-ancestral", type=int, default=1000)
    q.add_argument("--n-uncond", type=int, default=500)
    q.add_argument("--nll-n", type=int, default=0)
    q.add_argument("--png", action="store_true", help="write sample grids next to the results")
    q.add_argument("--cache", default=None, help="save conditional samples here batch by batch; a re-run resumes")
    q.add_argument("--sample-batch", type=int, default=250)
    q.add_argument("--eval-only", action="store_true", help="evaluate the finished run in --run without training")
    q.add_argument("--samplers", default="ddim,dpm_solver_pp,ancestral", help="which of the three to evaluate")
    q.add_argument("--tag", default="", help="suffix of this process's JSON (parallel evaluations of one run)")
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--image-size", type=int, default=28, help="28: MNIST as is; 32: zero-padded as Ho et al.")
    q.add_argument("--compile", action="store_true", help="torch.compile the U-Net for sampling")
    q.add_argument("--note", default="", help="a remark on the machine's load, written next to it")
    v = sub.add_parser("variance", help="fixed vs learned reverse variance at the same training budget")
    v.add_argument("--which", default="both", choices=("fixed", "learned", "both"))
    v.add_argument("--run-prefix", default="runs/bench_images_variance")
    v.add_argument("--minutes", type=float, default=10.0, help="training budget of each arm")
    v.add_argument("--batch", type=int, default=64)
    v.add_argument("--lr", type=float, default=2e-3)
    v.add_argument("--ema", type=float, default=0.995)
    v.add_argument("--guidance", type=float, default=3.0)
    v.add_argument("--n", type=int, default=200, help="guided samples per (arm, steps) cell")
    v.add_argument("--nll-n", type=int, default=200, help="held-out digits for bits/dim")
    v.add_argument("--steps", type=_ints, default=(25, 50, 100), help="ancestral steps, e.g. 25,50,100")
    v.add_argument("--sample-batch", type=int, default=200)
    v.add_argument("--report-only", action="store_true", help="write the table from the arms' JSONs")
    v.add_argument("--note", default="", help="a remark on the machine's load, written next to it")
    v.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = {"speed": speed, "quality": quality, "variance": variance}[args.what](args)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
