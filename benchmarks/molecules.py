"""Molecule benchmark: (1) EGNN training speed, factored and concatenated sparse EGNN and a dense padded reference,
at EDM's QM9 configuration and the CPU one; (2) EDM's four metrics after the training this machine allows, ancestral
1000 steps vs a 50-step ODE.

    python benchmarks/molecules.py speed   --rounds 3 --steps 2 --threads 2   # edm (256 x 9) and cpu (64 x 4)
    python benchmarks/molecules.py quality --train-minutes 12 --n-ancestral 200 --n-fast 1000
    python benchmarks/molecules.py recipes --cpu-minutes 7 --n 300        # (3) recipe switches, same CPU budget
    python benchmarks/molecules.py search --cpu-minutes 15 --points 3 --n 300  # (5) recipe curves (issue 31)
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

from _machine import machine as _machine
from _molecules_common import RECIPES, _samplers, base_train_kw, score, train_for_cpu
from _molecules_race import run_race
from _molecules_recipes import add_arguments as _search_arguments
from _molecules_recipes import markdown as _search_markdown
from _molecules_recipes import run_search
from _molecules_speed import SPEED_IMPLS, _speed_markdown, run_speed

RESULTS = Path(__file__).with_name("results_molecules.md")


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


def _markdown(part: str, res: dict) -> str:
    head = (f"\n### molecules {part} ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
            f"- command: `python {' '.join(sys.argv)}`\n- machine: {_machine()}\n")
    if part == "race":
        if res is None:
            return head + "- skipped: no EDM checkout (--edm-repo)\n"

        def ci(r, key):
            lo, hi = r.get(f"{key}_ci", (float("nan"), float("nan")))
            return f"{r[key]:.3f} [{lo:.3f}, {hi:.3f}]"

        def cells(r):
            return (f"{r['train_steps']} | {ci(r, 'atom_stability')} | {ci(r, 'molecule_stability')} | "
                    f"{r['validity']:.3f} | {r['valid_x_unique']:.3f}")

        rows = "".join(f"| {g['k']} | {g['cpu_hours']:.3f} / {e['cpu_hours']:.3f} | {cells(g)} | {cells(e)} |\n"
                       for g, e in zip(res["gendiff"], res["edm"]))
        tg, te = res["gendiff_hours_to_level"], res["edm_hours_to_level"]
        g_last, e_last = res["gendiff"][-1], res["edm"][-1]
        g_speed = g_last["n"] / g_last["sample_cpu_seconds"]
        e_speed = e_last["n"] / e_last["sample_cpu_seconds"]
        ratio = (f"**{res['ratio_edm_over_gendiff']:.2f}x** (EDM / gendiff CPU time to reach atom stability "
                 f"{res['level']:.3f}: {te:.3f} h / {tg:.3f} h)") if res["ratio_edm_over_gendiff"] else (
                 f"not defined (times to reach atom stability {res['level']:.3f}: gendiff {tg}, EDM {te})")
        return head + (
            f"- both: EGNN {res['hidden']} features x {res['layers']} layers, batch {res['batch_size']}, lr "
            f"{res['lr']}, EMA {res['ema_decay']}, {res['threads']} thread(s), niced, QM9 train split (gendiff's "
            f"qm9pack data written in EDM's npz format), {res['cpu_budget_s'] / 60:.1f} min of training CPU each, "
            f"run at the same time; EDM = its own code (commit {res['edm_repo_commit']}), its QM9 recipe "
            "(polynomial_2, 1000 steps, l2, 1/4/10, AdamW amsgrad, adaptive clipping, EMA without warm-up); gendiff "
            f"= recipe {res.get('recipe', 'edm')} ({RECIPES.get(res.get('recipe', 'edm')) or 'molecules.train defaults'})\n"
            f"- {res['n']} molecules per checkpoint, all scored by gendiff's evaluator; gendiff samples with "
            f"{res['sampler']}, EDM with its own 1000-step ancestral sampler; [ ] = Wilson 95% intervals\n\n"
            "| ckpt | CPU h gendiff / EDM | gendiff steps | atom | mol | valid | VxU | EDM steps | atom | mol | "
            "valid | VxU |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n" + rows +
            f"\nCPU-time ratio to the same atom stability: {ratio}\n\nSampling (last checkpoint, one thread): gendiff "
            f"{g_speed:.2f} molecules per CPU second, EDM {e_speed:.3f} (**{g_speed / e_speed:.0f}x**)\n")
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
    r.add_argument("--samplers", default="ancestral:100,dpm_solver_pp:50",
                   help="NAME:STEPS,... (<= 100 steps; the first ranks the recipes)")
    r.add_argument("--root", default="runs/bench_recipes",
                   help="one run folder per recipe; a recipe measured there with the same budget is reused")
    r.add_argument("--no-record", action="store_true", help="do not append to results_molecules.md (partial runs)")
    c = sub.add_parser("race", help="gendiff's default recipe against EDM's own code, same training CPU time")
    c.add_argument("--edm-repo", default=None, help="a local checkout of ehoogeboom/e3_diffusion_for_molecules")
    c.add_argument("--cpu-minutes", type=float, default=60.0, help="training CPU time of each")
    c.add_argument("--checkpoints", type=int, default=6, help="checkpoints (equally spaced in CPU time) scored")
    c.add_argument("--n", type=int, default=1000, help="molecules sampled per checkpoint")
    c.add_argument("--sampler", default="ancestral:100", help="gendiff's sampler NAME:STEPS (<= 100 steps)")
    c.add_argument("--root", default="runs/race_molecules", help="both runs, checkpoints and samples")
    c.add_argument("--data-cache", default="runs/edm_qm9_data", help="QM9 in EDM's npz format (written once)")
    c.add_argument("--png", default=str(Path(__file__).with_name("molecules_race.png")))
    c.add_argument("--score-existing", action="store_true",
                   help="train nothing: score the checkpoints an earlier (or interrupted) race left in --root")
    c.add_argument("--recipe", default="x0_clamped", choices=sorted(RECIPES),
                   help="gendiff's recipe (benchmarks/molecules.py recipes' names; x0_clamped: molecules.train's "
                        "defaults)")
    c.add_argument("--nice", type=int, default=10, help="niceness of the EDM process (at least this process's)")
    c.add_argument("--sample-procs", type=int, default=2,
                   help="EDM checkpoints sampled at once after training (one process, --threads threads, each)")
    se = sub.add_parser("search", help="recipe learning curves at the same CPU budget (results/molecules_recipes.md)")
    _search_arguments(se)
    for sp in (r, c, se):
        sp.add_argument("--hidden", type=int, default=64)
        sp.add_argument("--layers", type=int, default=4)
        sp.add_argument("--batch-size", type=int, default=64)
        sp.add_argument("--lr", type=float, default=5e-4)
        sp.add_argument("--ema-decay", type=float, default=0.995)
        sp.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    parts = {"speed": run_speed, "quality": run_quality, "recipes": run_recipes, "race": run_race,
             "search": run_search}
    res = parts[args.part](args)
    print(json.dumps(res, indent=1, default=str))
    if args.part == "search":
        text = _search_markdown(res)
        if not args.no_record:
            Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
            Path(args.markdown).write_text(text)
        print(text)
        return 0
    text = _markdown(args.part, res)
    if not getattr(args, "no_record", False):
        with open(RESULTS, "a") as fh:
            fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
