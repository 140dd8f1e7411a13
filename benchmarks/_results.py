"""Where a benchmark writes its result: benchmarks/results/NAME.md (command, machine, date, table).

A script replaces its own marked block, <!-- BLOCK --> ... <!-- /BLOCK -->, and leaves the rest of the file (the
notes and the dated history below the latest run) as it is; a file or block that is not there yet is created
(the block goes right after the file's title). Imported as a sibling module: `python benchmarks/NAME.py` puts
benchmarks/ on sys.path itself.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def result_path(name: str) -> Path:
    """benchmarks/results/NAME.md"""
    return RESULTS_DIR / f"{name}.md"


def write_block(path: str | Path, body: str, block: str = "latest", title: str | None = None) -> Path:
    """Put `body` between the <!-- block --> markers of the markdown file `path` (atomically)."""
    from gendiff.io import write_text_atomic

    path = Path(path)
    start, end = f"<!-- {block} -->", f"<!-- /{block} -->"
    marked = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.is_file() else f"{title or '# ' + path.stem}\n"
    if start in text and end in text:
        text = text[:text.index(start)] + marked + text[text.index(end) + len(end):]
    else:
        head, _, rest = text.partition("\n")
        text = f"{head}\n\n{marked}\n\n{rest.lstrip()}".rstrip() + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path


def heading(title: str, command: str) -> list[str]:
    """The first lines of a result block: `### title (date UTC)`, the command and the machine, each a paragraph."""
    from _machine import machine  # a sibling module, as this one

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"### {title} ({stamp})", "", f"Command: `{command}`", "", f"Machine: {machine()}", ""]
