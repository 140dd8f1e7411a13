"""The recipe search of issue 31: each recipe trained for the same training CPU time, its learning curve scored at
equally spaced fractions of that budget by the same evaluator (EDM's distance-inferred stabilities, RDKit validity,
uniqueness), Wilson 95% intervals on the stabilities. Resumable: every scored point is a JSON file in the recipe's
run folder, skipped when present; training resumes from the run's checkpoint (train_for_cpu)."""
from __future__ import annotations

import datetime
import json
import sys
import time
from pathlib import Path

from _machine import machine as _machine
from _molecules_common import RECIPES, base_train_kw, cpu_seconds_of, score, train_for_cpu

RESULTS_MD = Path(__file__).parent / "results" / "molecules_recipes.md"


def score_point(run: Path, n: int, sampler: str, steps: int, seed: int) -> dict:
    """_molecules_common.score of one sampler: EDM's metrics of n molecules, validity x uniqueness and Wilson
    intervals on the two stabilities."""
    return score(run, n, [(sampler, steps)], seed=seed)[f"{sampler}-{steps}"]


def _card_steps(run: Path) -> int:
    card = run / "card.json"
    return int(json.loads(card.read_text())["training"]["steps"]) if card.is_file() else 0


def run_search(args) -> dict:
    """Train and score every recipe's curve (points 1..P at k/P of the budget), then, with --final-n, score the
    full-budget weights once more on more molecules. Finished points are read back, not redone."""
    import torch

    torch.set_num_threads(args.threads)
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"--recipes: unknown {unknown}; known: {', '.join(RECIPES)}")
    name_s, _, steps_s = args.sampler.partition(":")
    samp_steps = int(steps_s or 100)
    root = Path(args.root)
    budget = 60.0 * args.cpu_minutes
    for name in names:
        run = root / name
        for k in range(1, min(args.points, args.upto or args.points) + 1):
            point = run / f"point_{k}of{args.points}_n{args.n}.json"
            if point.is_file():
                continue
            if args.final_only:
                break
            print(f"{time.strftime('%H:%M:%S')} {name}: training to {budget * k / args.points / 60:.1f} CPU min",
                  flush=True)
            train_for_cpu(run, budget * k / args.points, **{**base_train_kw(args), "seed": args.train_seed},
                          **RECIPES[name])
            t0 = time.process_time()
            m = score_point(run, args.n, name_s, samp_steps, args.seed)
            res = {"recipe": name, "switches": RECIPES[name], "point": k, "of": args.points,
                   "target_cpu_s": budget * k / args.points, "cpu_seconds": cpu_seconds_of(run),
                   "steps": _card_steps(run), "score_cpu_s": round(time.process_time() - t0, 1),
                   "sampler": args.sampler, "metrics": m}
            point.write_text(json.dumps(res, indent=1, default=str))
            print(f"{time.strftime('%H:%M:%S')} {name} point {k}: steps {res['steps']} atom "
                  f"{m['atom_stability']:.3f} mol {m['molecule_stability']:.3f} valid {m['validity']:.3f} "
                  f"VxU {m['valid_x_unique']:.3f}", flush=True)
    if args.final_n:
        for name in names:
            run = root / name
            last = run / f"point_{args.points}of{args.points}_n{args.n}.json"
            final = run / f"final_n{args.final_n}.json"
            if not last.is_file() or final.is_file():
                continue
            print(f"{time.strftime('%H:%M:%S')} {name}: final score on {args.final_n} molecules", flush=True)
            m = score_point(run, args.final_n, name_s, samp_steps, args.seed)
            final.write_text(json.dumps({"recipe": name, "cpu_seconds": cpu_seconds_of(run), "steps": _card_steps(run),
                                         "sampler": args.sampler, "metrics": m}, indent=1, default=str))
    return collect(args)


def collect(args) -> dict:
    """Every measured point of every recipe under --root (whatever run produced them)."""
    root = Path(args.root)
    out = {"cpu_budget_s": 60.0 * args.cpu_minutes, "train_seed": args.train_seed, "points": args.points, "n": args.n,
           "final_n": args.final_n, "sampler": args.sampler, "recipes": {}}
    for name in args.recipes.split(","):
        run = root / name
        pts = []
        for k in range(1, args.points + 1):
            f = run / f"point_{k}of{args.points}_n{args.n}.json"
            if f.is_file():
                pts.append(json.loads(f.read_text()))
        final = run / f"final_n{args.final_n}.json"
        out["recipes"][name] = {"switches": RECIPES[name], "points": pts,
                                "final": json.loads(final.read_text()) if args.final_n and final.is_file() else None}
    return out


def _curve_mean(points: list, key: str) -> float:
    return sum(p["metrics"][key] for p in points) / len(points)


def _gen(m: dict) -> str:
    """The generated-bond columns: molecule stability under strict neutral valences, RDKit validity ('-' without)."""
    keys = ("molecule_stability_generated_bonds", "validity_generated_bonds")
    return " | ".join("-" if m.get(k) is None else f"{m[k]:.3f}" for k in keys)


def _pct(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown(res: dict) -> str:
    """The table of every recipe's curve and the curve-mean ranking."""
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [f"\n## Recipe search, {res['cpu_budget_s'] / 60:g} training CPU minutes per recipe "
             f"(written {now:%Y-%m-%d %H:%M} UTC)\n",
             f"- command: `OMP_NUM_THREADS=1 nice -n 10 python {' '.join(sys.argv)}`",
             f"- machine: {_machine()}; the cores shared with other jobs of this session (trainings, benchmarks); 1 torch thread, niced; "
             "budgets are process CPU time (wall clock on shared cores is not a fair budget)",
             f"- each recipe: EGNN 64x4, batch 64, lr 5e-4 (warm-up 100), EMA 0.995, training seed {res['train_seed']},"
             " QM9 train split; "
             f"scored at {res['points']} points (k/{res['points']} of the budget) on {res['n']} molecules each, "
             f"sampler {res['sampler']} (log-SNR grid), seed 1"
             + (f"; the full-budget weights also on {res['final_n']} molecules" if res["final_n"] else ""),
             "- atom / molecule stability: EDM's distance-inferred bonds; [..] = Wilson 95% interval (atoms resp. "
             "molecules); VxU = validity x uniqueness; gen. bonds: a bonds recipe's own generated bonds, molecule "
             "stability under strict neutral valences and RDKit validity (not EDM's metric; '-' without bonds)\n",
             "| recipe | point | CPU min | steps | atom stab. [95%] | mol. stab. [95%] | valid | unique | VxU | "
             "mol. stab. gen. bonds | valid gen. bonds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    ranking = []
    for name, r in res["recipes"].items():
        for p in r["points"]:
            m = p["metrics"]
            lines.append(f"| {name} | {p['point']}/{p['of']} | {p['cpu_seconds'] / 60:.1f} | {p['steps']} | "
                         f"{m['atom_stability']:.3f} {_pct(m['atom_stability_ci'])} | {m['molecule_stability']:.3f} "
                         f"{_pct(m['molecule_stability_ci'])} | {m['validity']:.3f} | {m['uniqueness']:.3f} | "
                         f"{m['valid_x_unique']:.3f} | {_gen(m)} |")
        if r["final"]:
            m = r["final"]["metrics"]
            lines.append(f"| {name} | final, n={m['n']} | {r['final']['cpu_seconds'] / 60:.1f} | {r['final']['steps']} "
                         f"| {m['atom_stability']:.3f} {_pct(m['atom_stability_ci'])} | {m['molecule_stability']:.3f} "
                         f"{_pct(m['molecule_stability_ci'])} | {m['validity']:.3f} | {m['uniqueness']:.3f} | "
                         f"{m['valid_x_unique']:.3f} | {_gen(m)} |")
        if r["points"]:
            ranking.append((*(_curve_mean(r["points"], key) for key in ("molecule_stability", "atom_stability",
                                                                         "valid_x_unique")), name, len(r["points"])))
    ranking.sort(reverse=True)
    lines.append("\nCurve means (over the measured points; a recipe with fewer points is not comparable):\n")
    lines.append("| recipe | points | mean mol. stab. | mean atom stab. | mean VxU |\n|---|---|---|---|---|")
    for ms, at, vxu, name, k in ranking:
        lines.append(f"| {name} | {k} | {ms:.3f} | {at:.3f} | {vxu:.3f} |")
    return "\n".join(lines) + "\n"


def add_arguments(s) -> None:
    s.add_argument("--recipes", default="x0_clamped,edm,selfcond,ot_lownoise", help=f"of {', '.join(RECIPES)}")
    s.add_argument("--cpu-minutes", type=float, default=15.0, help="training CPU time per recipe")
    s.add_argument("--points", type=int, default=3, help="learning-curve points, at k/POINTS of the budget")
    s.add_argument("--n", type=int, default=300, help="molecules per curve point")
    s.add_argument("--upto", type=int, default=0,
                   help="stop after this point (breadth first: every recipe's point 1, then point 2, ...)")
    s.add_argument("--final-n", type=int, default=0, help="also score the full-budget weights on this many")
    s.add_argument("--final-only", action="store_true", help="train nothing; only the --final-n scores")
    s.add_argument("--sampler", default="ancestral:100", help="NAME:STEPS")
    s.add_argument("--seed", type=int, default=1, help="sampling seed")
    s.add_argument("--train-seed", type=int, default=0, help="training seed (a replicate: another --root)")
    s.add_argument("--root", default="runs/recipe_search")
    s.add_argument("--markdown", default=str(RESULTS_MD), help="write the table here (replaced, not appended)")
    s.add_argument("--no-record", action="store_true")
