"""The one run format (Design 14): a run folder holds config.json (all that rebuilds the model), weights.safetensors
(its EMA weights, loaded without unpickling) and card.json (how it was trained and what it measured). Training
checkpoints (optimizer, RNG) stay beside them in checkpoint.pt for resuming and are never shipped.

`pretrained:NAME` names a run shipped inside a domain package (gendiff/domains/<domain>/pretrained/NAME/), the way
diffusers' `from_pretrained` names a hub folder, offline.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .checkpoints import load_ema_weights
from .errors import ConfigError, DataError
from .io import atomic_path, write_json_atomic

FORMAT = "gendiff-run-v1"
CONFIG, WEIGHTS, CARD, CHECKPOINT = "config.json", "weights.safetensors", "card.json", "checkpoint.pt"
PREFIX = "pretrained:"


@dataclass
class Run:
    """A run folder read back: its path, config and card (weights are loaded into a model by load_weights)."""

    path: Path
    config: dict
    card: dict

    @property
    def domain(self) -> str:
        return self.config["domain"]

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def name(self) -> str:
        return self.card.get("name") or self.path.name


def _domains_dir() -> Path:
    spec = importlib.util.find_spec("gendiff.domains")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("gendiff.domains is not installed; no pretrained models can be found")
    return Path(list(spec.submodule_search_locations)[0])


def pretrained_dirs() -> dict[str, Path]:
    """{name: folder} of every shipped model, found without importing any domain."""
    out: dict[str, Path] = {}
    for cfg in sorted(_domains_dir().glob(f"*/pretrained/*/{CONFIG}")):
        name = cfg.parent.name
        if name in out:
            raise DataError(f"pretrained model name {name!r} is shipped twice: {out[name]} and {cfg.parent}")
        out[name] = cfg.parent
    return out


def resolve(spec: str | os.PathLike) -> Path:
    """The folder of a run: `pretrained:NAME` -> the shipped one; anything else is a path."""
    text = str(spec)
    if text.startswith(PREFIX):
        name = text[len(PREFIX) :]
        shipped = pretrained_dirs()
        if name not in shipped:
            raise DataError(
                f"{text}: no such pretrained model (shipped: {', '.join(sorted(shipped)) or 'none'}; "
                "`gendiff list` shows them)"
            )
        return shipped[name]
    return Path(spec)


def _read_json(path: Path, what: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: {what} must be a JSON object")
    return value


def read_run(spec, domain: str | None = None) -> Run:
    """Read config.json and card.json of a run folder or `pretrained:NAME`; one-line DataError saying what to do
    when the folder is not a run of this format or of this domain."""
    path = resolve(spec)
    cfg_path = path / CONFIG
    if not cfg_path.is_file():
        raise DataError(
            f"{path}: not a gendiff run (no {CONFIG}); train one with `gendiff train "
            f"{domain or '<domain>'}` or pass pretrained:NAME"
        )
    config = _read_json(cfg_path, "run config")
    if config.get("format") != FORMAT:
        raise DataError(
            f"{cfg_path}: run format {config.get('format')!r} is not {FORMAT!r} (written by an older "
            f"gendiff); retrain it with `gendiff train {config.get('domain', domain or '<domain>')}`"
        )
    if domain is not None and config.get("domain") != domain:
        raise DataError(f"{cfg_path}: a {config.get('domain')!r} run, not a {domain!r} one")
    if not (path / WEIGHTS).is_file():
        hint = (
            " (training checkpoint found: finish or export it with gendiff.runs.export_weights)"
            if (path / CHECKPOINT).is_file()
            else ""
        )
        raise DataError(f"{path / WEIGHTS}: missing{hint}")
    card = _read_json(path / CARD, "model card") if (path / CARD).is_file() else {}
    return Run(path, config, card)


def load_weights(run: Run, model) -> None:
    """Load weights.safetensors into `model` (strict); a truncated or corrupt file, or weights that do not fit the
    model config.json describes, give one DataError naming the file."""
    expected = run.config.get("weights_sha256")
    if expected and sha256(run.weights) != expected:
        raise DataError(
            f"{run.weights}: checksum does not match {run.path / CONFIG} (the file is truncated or "
            "corrupt, or was replaced); download or export it again"
        )
    try:
        state = load_file(str(run.weights))
    except Exception as exc:  # safetensors raises its own error types for truncated / garbled headers
        raise DataError(
            f"{run.weights}: unreadable weights file, truncated or corrupt ({str(exc).splitlines()[0]}); "
            "download or export it again"
        ) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3]) or str(exc)
        raise DataError(
            f"{run.weights}: weights do not fit the model {run.path / CONFIG} describes ({detail[:300]})"
        ) from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model_or_state, path: Path) -> None:
    """Write a state_dict as safetensors atomically (contiguous CPU copies; shared storage is split)."""
    state = model_or_state if isinstance(model_or_state, dict) else model_or_state.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})


def save_run(out, domain: str, config: dict, model, card: dict | None = None) -> Path:
    """Write (or refresh) a run folder: weights first, then config.json, then card.json, each atomically, so a
    reader never sees a config without the weights it describes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / WEIGHTS)
    config = {k: v for k, v in config.items() if k not in ("format", "domain", "weights_sha256")}
    write_json_atomic(
        out / CONFIG, {"format": FORMAT, "domain": domain, **config, "weights_sha256": sha256(out / WEIGHTS)}
    )
    if card is not None:
        write_json_atomic(out / CARD, card)
    return out


def export_weights(run_dir, model, checkpoint: str = CHECKPOINT) -> None:
    """weights.safetensors from the EMA weights of a trainer checkpoint in the same folder."""
    run_dir = Path(run_dir)
    load_ema_weights(run_dir / checkpoint, model)
    save_weights(model, run_dir / WEIGHTS)


def _commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def hardware(device=None) -> str:
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return (
        f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )


def new_card(
    name: str,
    domain: str,
    *,
    data: str,
    split: str,
    summary: dict,
    seed: int,
    device=None,
    command: str | None = None,
    previous: dict | None = None,
    **extra,
) -> dict:
    """A card for a run just trained: data and split, steps, wall-clock and CPU time (cumulative over sittings when
    `previous` is the card of the run it resumed; a sitting the checkpoint remembers and `previous` does not, one
    stopped before it wrote a card, counts with its time up to its last checkpoint), hardware, seed, commit and
    command. Metrics of the previous card are not carried over: they were measured on other weights."""
    prev = previous or {}
    sittings = list(prev.get("training", {}).get("sittings", []))
    known = {s.get("id") for s in sittings}
    for lost in summary.get("earlier_sittings") or []:  # stopped before writing a card: time to its last checkpoint
        if lost.get("id") not in known:
            sittings.append(
                {
                    "steps_to": lost.get("step"),
                    "wall_seconds": lost.get("seconds"),
                    "cpu_seconds": lost.get("cpu_seconds"),
                    "stopped": "interrupted (time up to its last checkpoint)",
                    "id": lost.get("id"),
                }
            )
            known.add(lost.get("id"))
    sittings.append(
        {
            "id": summary.get("sitting_id"),
            "steps_to": summary.get("step"),
            "wall_seconds": summary.get("seconds"),
            "cpu_seconds": summary.get("cpu_seconds"),
            "stopped": summary.get("stopped"),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _commit(),
            "hardware": hardware(device),
        }
    )
    training = {
        "data": data,
        "split": split,
        "steps": summary.get("step"),
        "seed": seed,
        "wall_seconds": sum(s["wall_seconds"] or 0 for s in sittings),
        "cpu_seconds": sum(s["cpu_seconds"] or 0 for s in sittings),
        "hardware": hardware(device),
        "commit": _commit(),
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "sittings": sittings,
    }
    card = {"name": name, "domain": domain, "training": training, "metrics": {}, **extra}
    if prev.get("curve"):  # the scores of earlier sittings' weights, each tagged with its steps and CPU hours
        card["curve"] = list(prev["curve"])
    if "headline" in prev and "headline" not in card:
        card["headline"] = prev["headline"]  # which metrics `gendiff list` shows, once they are measured again
    return card


def record_metrics(run_dir, key: str, metrics: dict, command: str) -> dict:
    """Add (or replace) one block of measured metrics on a run's card, with the command that measured them.

    The block is also added to the card's `curve`: one point per (train_steps, key), with the cumulative CPU
    hours of training, which new_card carries across sittings, so a card shows how its scores grew with training
    (re-measuring the same weights with the same key replaces their point)."""
    run_dir = Path(run_dir)
    card_path = run_dir / CARD
    card = _read_json(card_path, "model card") if card_path.is_file() else {}
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    card.setdefault("metrics", {})[key] = {**metrics, "command": command, "date": date}
    training = card.get("training", {})
    if training.get("steps") is not None:
        cpu = training.get("cpu_seconds")
        point = {
            **{k: v for k, v in metrics.items() if _is_number(v)},
            "key": key,
            "date": date,
            "train_steps": training["steps"],
            "cpu_hours": None if cpu is None else round(cpu / 3600, 4),
        }
        curve = [
            p for p in card.get("curve", []) if (p.get("train_steps"), p.get("key")) != (point["train_steps"], key)
        ]
        card["curve"] = sorted([*curve, point], key=lambda p: (p.get("train_steps") or 0, str(p.get("key"))))
    write_json_atomic(card_path, card)
    return card


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_BOOKKEEPING = {"n", "steps", "seed", "nfe"}


def card_headline(card: dict) -> dict:
    """The metrics `gendiff list` shows for a card: the keys its optional `headline` list names (looked up in every
    metrics block, first block first), else every number in its metrics blocks but counts, seeds, times and stds."""
    blocks = list(card.get("metrics", {}).values())
    wanted = card.get("headline")
    out = {}
    for block in blocks:
        if not isinstance(block, dict):
            continue
        for key, value in block.items():
            if not _is_number(value) or key in out:
                continue
            if wanted is not None:
                if key in wanted:
                    out[key] = value
            elif key not in _BOOKKEEPING and not key.endswith(("_seconds", "_std")):
                out[key] = value
    if wanted is not None:
        out = {k: out[k] for k in wanted if k in out}
    return out


def saved_config(out, hint: str) -> dict | None:
    """The config.json of a run folder about to be resumed (None when there is none); a folder of an older format
    is refused with one line ending in `hint` (what to do instead)."""
    path = Path(out) / CONFIG
    if not path.is_file():
        return None
    saved = _read_json(path, "run config")
    if saved.get("format") != FORMAT:
        raise DataError(
            f"{path}: run format {saved.get('format')!r} is not {FORMAT!r} (written by an older gendiff); {hint}"
        )
    return saved


def list_pretrained() -> list[dict]:
    """One row per shipped model: name, domain, folder, size in bytes and the card's headline metrics."""
    rows: list[dict] = []
    for name, path in pretrained_dirs().items():
        try:
            run = read_run(f"{PREFIX}{name}")
        except DataError as exc:
            rows.append({"name": name, "domain": "?", "path": str(path), "error": str(exc)})
            continue
        headline = card_headline(run.card)
        rows.append(
            {
                "name": name,
                "domain": run.domain,
                "path": str(path),
                "bytes": run.weights.stat().st_size,
                "metrics": headline,
                "steps": run.card.get("training", {}).get("steps"),
            }
        )
    return rows


def timer() -> tuple[float, float]:
    """(wall, cpu) clocks, for cards of work done outside the Trainer."""
    return time.perf_counter(), time.process_time()


def check_name(name: str) -> str:
    if not name or any(c in name for c in "/\\: "):
        raise ConfigError(f"pretrained model name {name!r} must be a plain word (no '/', ':' or spaces)")
    return name
