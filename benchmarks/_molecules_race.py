"""benchmarks/molecules.py race: gendiff's default recipe against EDM's own code (a checkout the user points at,
run by _edm_harness.py in its own process), same data, threads and training CPU time."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from _molecules_common import RECIPES, _samplers, add_intervals, base_train_kw, score, train_for_cpu


EDM_MAX_ATOMS = 29


def write_edm_qm9(datadir: Path) -> Path:
    """QM9 from qm9pack (molecules.data) in the files EDM's loader reads: DATADIR/qm9/{train,valid,test}.npz with
    num_atoms, charges (atomic numbers, zero-padded to 29), positions (angstrom, padded) and index, on gendiff's
    split (the EDM/Cormorant split: its train atom-count histogram equals EDM's configs/datasets_config.py)."""
    import numpy as np

    from gendiff.domains.molecules.data import load_qm9_arrays, split_indices
    from gendiff.io import write_npz_atomic

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
        write_npz_atomic(path, num_atoms=n, charges=charges, positions=positions, index=idx.astype(np.int64))
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
    log = open(root / "edm.log", "a")
    bump = max(0, args.nice - os.nice(0))  # EDM at the same niceness as this process (which trains gendiff)
    edm = subprocess.Popen(["nice", "-n", str(bump)] + cmd + ["--no-sample"], stdout=log, stderr=subprocess.STDOUT,
                           env=env)
    print("EDM:", " ".join(cmd), flush=True)

    run = root / "gendiff"
    try:
        for k in range(args.checkpoints):
            mark = budget * (k + 1) / args.checkpoints
            t = train_for_cpu(run, mark, **base_train_kw(args), **RECIPES[args.recipe])
            keep = root / "gendiff_checkpoints" / str(k)
            keep.mkdir(parents=True, exist_ok=True)
            for name in ("config.json", "weights.safetensors", "card.json"):
                shutil.copy2(run / name, keep / name)
            _gendiff_row(keep, k, args.n, sampler, steps)
            print(f"gendiff checkpoint {k}: {t}", flush=True)
    finally:
        code = edm.wait()
    if code != 0:
        log.close()
        raise SystemExit(f"EDM harness failed (exit {code}); see {root / 'edm.log'}")
    # EDM's 1000-step sampling is most of its cost (about 5.5 CPU s per molecule at 64 x 4): one process per
    # checkpoint, args.sample_procs at a time, each resuming its parts
    todo = list(range(args.checkpoints))
    while todo:
        batch, todo = todo[:args.sample_procs], todo[args.sample_procs:]
        procs = [subprocess.Popen(["nice", "-n", str(bump)] + cmd + ["--only-k", str(k)], stdout=log,
                                  stderr=subprocess.STDOUT, env=env) for k in batch]
        codes = [q.wait() for q in procs]
        if any(codes):
            log.close()
            raise SystemExit(f"EDM sampling failed (exits {codes}); see {root / 'edm.log'}")
    log.close()
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
    import numpy as np

    from gendiff.domains import molecules

    progress = json.loads((edm_out / "progress.json").read_text())
    kept = sorted((int(d.name), d) for d in (root / "gendiff_checkpoints").iterdir() if (d / "card.json").is_file())
    gendiff_rows = [_gendiff_row(d, k, args.n, sampler, steps) for k, d in kept]
    edm_rows = []
    for c in progress["checkpoints"]:
        npz = edm_out / f"edm_samples_{c['k']}.npz"
        if not npz.is_file():
            break  # sampled in a later call (the race command resumes)
        mols = edm_molecules(npz)
        m = molecules.evaluate(molecules=mols)
        m["valid_x_unique"] = m["validity"] * m["uniqueness"]
        add_intervals(m, sum(int(x.num_nodes) for x in mols))
        cpu = float(np.load(npz)["cpu"])
        edm_rows.append({"k": c["k"], "cpu_hours": c["train_cpu_seconds"] / 3600, **m, "train_steps": c["steps"],
                         "sample_cpu_seconds": round(cpu, 1), "molecules_per_cpu_second": len(mols) / cpu,
                         "sampler": "edm-ancestral-1000"})
    both = min(len(gendiff_rows), len(edm_rows))
    if both == 0:
        raise SystemExit(f"{root}: no checkpoint reached by both yet")
    gendiff_rows, edm_rows = gendiff_rows[:both], edm_rows[:both]
    final_g, final_e = gendiff_rows[-1]["atom_stability"], edm_rows[-1]["atom_stability"]
    level = min(final_g, final_e)
    tg = time_to_reach([(r["cpu_hours"], r["atom_stability"]) for r in gendiff_rows], level)
    te = time_to_reach([(r["cpu_hours"], r["atom_stability"]) for r in edm_rows], level)
    res = {"recipe": args.recipe, "cpu_budget_s": budget, "checkpoints": args.checkpoints, "checkpoints_scored": both, "n": args.n, "sampler": f"{sampler}-{steps}",
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
