"""The benchmarks' common ending: print the JSON result and write it to ``--out``."""

from __future__ import annotations

import json
from pathlib import Path


def emit(result: dict, out: Path | None, *, indent: int = 1, stdout: bool = True) -> None:
    """Print ``result`` as JSON (unless ``stdout`` is False) and write it, newline-terminated, to ``out`` (folders made)."""
    text = json.dumps(result, indent=indent)
    if stdout:
        print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
