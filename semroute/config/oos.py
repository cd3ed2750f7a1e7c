"""The out-of-scope example file (`router.oos_examples`): queries no route should take, read
as text lines or a YAML list, normalised and checked like utterances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from semroute.config.text import normalise_text

SETTING = "router.oos_examples"
YAML_SUFFIXES = (".yaml", ".yml")


def oos_path(directory: Path, setting: str | None) -> Path | None:
    """Where `router.oos_examples` points (relative to the routes folder), or None."""
    if setting is None:
        return None
    path = Path(setting)
    return path if path.is_absolute() else directory / path


def _items(path: Path, text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(where, text) of each example: `line N` of a text file, `item N` of a YAML list."""
    if path.suffix.lower() not in YAML_SUFFIXES:
        return [(f"line {n}", line) for n, line in enumerate(text.splitlines(), 1)
                if line.strip() and not line.lstrip().startswith("#")], []
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [], [f"{path}: invalid YAML: {exc}"]
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        return [], [f"{path}: expected a YAML list of strings (out-of-scope example queries)"]
    return [(f"item {n}", x) for n, x in enumerate(data, 1)], []


def read_oos_examples(path: Path, utterances: dict[str, str]) -> tuple[tuple[str, ...],
                                                                       list[str]]:
    """The normalised examples of an out-of-scope file and the problems found: a missing or
    unreadable file, an empty example, a repeat, an example that is also a route's utterance
    (`utterances`: casefolded utterance -> route name)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return (), [f"{path}: field '{SETTING}': cannot read the out-of-scope example file "
                    f"({exc}); fix the path (relative to the routes folder) or remove it"]
    items, problems = _items(path, text)
    seen: dict[str, str] = {}
    out: list[str] = []
    for where, raw in items:
        example = normalise_text(raw)
        key = example.casefold()
        if not example:
            problems.append(f"{path}: {where}: field '{SETTING}': the example is empty")
        elif key in seen:
            problems.append(f"{path}: {where}: field '{SETTING}': '{example}' repeats "
                            f"{seen[key]}")
        elif key in utterances:
            problems.append(f"{path}: {where}: field '{SETTING}': '{example}' is an utterance "
                            f"of route '{utterances[key]}'; remove it from one of them")
        else:
            seen[key] = where
            out.append(example)
    if not out and not problems:
        problems.append(f"{path}: field '{SETTING}': the file holds no examples (one query "
                        f"per line, '#' starts a comment)")
    return tuple(out), problems
