"""EDM's Table 3 for a property-conditioned molecules run: the classifier's MAE on the run's samples beside its lower
bound (real second-half molecules), the shuffled-label 'Naive (upper bound)' and the atom-count-only '#Atoms'
baseline, with EDM's published numbers (gendiff.domains.molecules.condeval).

    OMP_NUM_THREADS=1 nice python benchmarks/molecules_conditional.py --run runs/qm9_alpha \\
        --classifier benchmarks/checkpoints/qm9-alpha-classifier --n 10000 --seed 0 --steps 100
    python benchmarks/molecules_conditional.py --skip-generator --limit 2000     # the three baselines only

The table is printed and appended, with its date, command and machine, to --out-md (default
benchmarks/results/molecules_conditional.md; written atomically, earlier runs stay above it).
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch
from _machine import machine  # python puts the script's folder, benchmarks/, on sys.path
from _results import heading

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "molecules_conditional.md"
TITLE = "# Molecules: EDM's Table 3, property-conditioned generation (benchmarks/molecules_conditional.py)"


def compute(args) -> dict:
    """The four rows for the classifier's property: lower bound and naive (one pass over real molecules), #Atoms,
    and the run's samples unless --skip-generator."""
    from gendiff.domains.molecules import condeval
    from gendiff.domains.molecules.classifier import load_classifier

    clf = load_classifier(args.classifier)
    prop = clf["property"]
    res = {"property": prop, "unit": clf["unit"], "classifier": str(args.classifier), "classifier_steps": clf["steps"]}
    res["real"] = condeval.classifier_baselines(clf, "second", args.limit, args.seed)
    print(f"{prop}: lower bound {res['real']['lower_bound']:.4g}, naive {res['real']['naive']:.4g} "
          f"({res['real']['n']} molecules, {res['real']['seconds']} s)", flush=True)
    t0 = time.perf_counter()
    res["atoms"] = condeval.atom_count_mae(prop, "first", "second", args.atoms_limit)
    res["atoms_seconds"] = round(time.perf_counter() - t0, 2)
    print(f"{prop}: #Atoms {res['atoms']:.4g}", flush=True)
    if not args.skip_generator:
        kw = {"spacing": args.spacing} if args.spacing else {}
        res["generator"] = condeval.conditional_mae(args.run, clf, args.n, args.seed, args.sampler, args.steps,
                                                    batch_size=args.batch_size, device=args.device,
                                                    progress=args.progress, **kw)
        print(f"{prop}: run {args.run} MAE {res['generator']['mae']:.4g} ({res['generator']['n']} molecules, "
              f"{res['generator']['sample_seconds']} s)", flush=True)
    return res


def table(res: dict) -> str:
    from gendiff.domains.molecules import condeval

    p = res["property"]
    ours = {"naive": {p: res["real"]["naive"]}, "atoms": {p: res["atoms"]},
            "lower_bound": {p: res["real"]["lower_bound"]}}
    if res.get("generator"):
        ours["generator"] = {p: res["generator"]["mae"]}
    return condeval.markdown_table(ours, [p])


def block(res: dict, args, command: str) -> str:
    """The markdown block: heading (title, date, command, machine), what each row measured, the table."""
    real, gen = res["real"], res.get("generator")
    n_atoms = "all 50,000" if not args.atoms_limit else f"the first {args.atoms_limit:,}"
    what = "baselines only (no generator)" if gen is None else f"run {args.run}"
    lines = heading(f"{res['property']}: {what}", command) + [
        f"- classifier: `{res['classifier']}` ({res['classifier_steps']:,} steps, trained on EDM's first half); MAE "
        f"in {res['unit']}",
        f"- QM9 (lower bound) and Naive (upper bound): the classifier on the first {real['n']:,} molecules of EDM's "
        f"second half, against their own values and against the same values permuted (seed {args.seed}); "
        f"{real['seconds']} s",
        f"- #Atoms: median {res['property']} per atom count on EDM's first half (nearest count where unseen), "
        f"scored on {n_atoms} molecules of the second half",
    ]
    if gen is None:
        lines.append("- conditional run: not run (--skip-generator)")
    else:
        from gendiff.device import resolve_device

        dev = resolve_device(args.device)
        where = machine(dev) if dev.type == "cuda" else "the CPU above"
        lines.append(f"- conditional run: `{args.run}`, {gen['n']:,} molecules, {gen['sampler']} {gen['steps']} "
                     f"steps, seed {gen['seed']}, ({res['property']}, N) pairs drawn from its conditioning molecules; "
                     f"sampled in {gen['sample_seconds']} s on {where}; "
                     f"atom stability {gen.get('atom_stability', float('nan')):.3f}, molecule stability "
                     f"{gen.get('molecule_stability', float('nan')):.3f}")
    return "\n".join(lines + ["", table(res), ""])


def append_markdown(path: Path, text: str) -> Path:
    """Append `text` to the markdown file `path` (created with its title if absent), atomically."""
    from gendiff.io import write_text_atomic

    path = Path(path)
    old = path.read_text() if path.is_file() else f"{TITLE}\n"
    write_text_atomic(path, old.rstrip() + "\n\n" + text.rstrip() + "\n")
    return path


def main(argv=None) -> int:
    from gendiff.domains.molecules.defaults import DEFAULT_SAMPLER, DEFAULT_STEPS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/qm9_alpha", help="the conditional molecules run")
    p.add_argument("--classifier", default="benchmarks/checkpoints/qm9-alpha-classifier")
    p.add_argument("--n", type=int, default=10_000, help="molecules sampled from the run (EDM: 10,000)")
    p.add_argument("--seed", type=int, default=0, help="the (property, N) draws, the sampling and the shuffle")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--spacing", default=None, help="the sampler's time grid (default: sample()'s)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--limit", type=int, default=None,
                   help="real second-half molecules for the lower bound and the shuffled row (default: all 50,000)")
    p.add_argument("--atoms-limit", type=int, default=None, help="second-half molecules for #Atoms (default: all)")
    p.add_argument("--skip-generator", action="store_true", help="the three baselines only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true", help="a progress bar while sampling")
    p.add_argument("--out-md", default=str(RESULTS), help="markdown file the block is appended to")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    given = sys.argv[1:] if argv is None else [str(a) for a in argv]
    command = shlex.join(["python", "benchmarks/molecules_conditional.py", *given])
    res = compute(args)
    text = block(res, args, command)
    print(text)
    if not args.no_write:
        print(f"appended to {append_markdown(Path(args.out_md), text)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
