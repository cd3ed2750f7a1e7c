"""Reviewable patches to route files: new utterances appended to a route's `utterances:` list
and a route's `model:` / `metadata.tier` changed in place, edited as text so comments, key
order, quoting and indentation survive. Every edit is checked by parsing the result; the
patch is a unified diff; applying it validates the whole routes folder first (a copy with the
patch applied must load) and then replaces each file atomically.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from semroute.config import load_routes
from semroute.errors import ConfigError
from semroute.files import write_atomic

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:(.*)$")
ITEM = re.compile(r"^(\s*)-(\s+|$)")


@dataclass(frozen=True)
class RouteEdit:
    """What to change in one route's file: utterances to append, a new model chain and a new
    `metadata.tier` (None: unchanged)."""

    route: str
    file: Path
    add_utterances: tuple[str, ...] = ()
    model: tuple[str, ...] | None = None
    tier: str | None = None


@dataclass
class RoutePatch:
    """Changed route files: (old text, new text) per file, and the folder they belong to."""

    directory: Path
    files: dict[Path, tuple[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # edits that could not be made

    @property
    def empty(self) -> bool:
        return not self.files

    def diff(self) -> str:
        """The unified diff (paths relative to the routes folder's parent, `a/` and `b/`)."""
        out: list[str] = []
        for path, (old, new) in sorted(self.files.items()):
            rel = path.relative_to(self.directory.parent) if path.is_relative_to(
                self.directory.parent) else path
            out += difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True),
                                        fromfile=f"a/{rel}", tofile=f"b/{rel}")
        return "".join(line if line.endswith("\n") else line + "\n" for line in out)


def _parse(text: str) -> Any:
    return yaml.load(text, Loader=_LOADER)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _skippable(line: str) -> bool:
    s = line.strip()
    return not s or s.startswith("#")


def _top_key(lines: Sequence[str], key: str) -> int | None:
    for i, line in enumerate(lines):
        m = TOP_KEY.match(line)
        if m and m.group(1) == key:
            return i
    return None


def _block_end(lines: Sequence[str], start: int) -> int:
    """The index after the last content line of the block value of the top-level key at
    `start` (list items may sit at column 0, YAML allows it)."""
    last = start
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if _skippable(line):
            continue
        if _indent(line) == 0 and not ITEM.match(line):
            break
        last = i
    return last + 1


def yaml_scalar(text: str, style: str = "plain") -> str:
    """`text` as a one-line YAML scalar in the list's style: plain when YAML reads it back
    unchanged, else single-quoted ('' inside), or double-quoted when the list uses those."""
    if style == "double":
        return json.dumps(text, ensure_ascii=False)
    if style == "plain" and "\n" not in text and text == text.strip():
        try:
            if _parse(f"- {text}") == [text]:
                return text
        except yaml.YAMLError:
            pass
    return "'" + text.replace("'", "''") + "'"


def _list_style(items: Sequence[str]) -> str:
    quoted = [s.lstrip()[1:].lstrip()[:1] for s in items]
    doubles = sum(q == '"' for q in quoted)
    return "double" if items and doubles > len(items) / 2 else "plain"


def add_utterances(text: str, new: Sequence[str]) -> str:
    """Append `new` to the top-level `utterances:` block list, in its indentation and quoting."""
    if not new:
        return text
    lines = text.splitlines(keepends=True)
    at = _top_key(lines, "utterances")
    if at is None:
        raise ValueError("no top-level `utterances:` key")
    if TOP_KEY.match(lines[at].rstrip("\n")) and lines[at].split(":", 1)[1].split("#")[0].strip():
        raise ValueError("`utterances:` is written inline (flow style); only a block list "
                         "(one `- item` per line) can be edited in place")
    end = _block_end(lines, at)
    items = [ln for ln in lines[at + 1:end] if ITEM.match(ln)]
    if not items:
        raise ValueError("`utterances:` has no `- item` lines")
    pad = ITEM.match(items[0]).group(1)  # type: ignore[union-attr]
    style = _list_style(items)
    if not lines[end - 1].endswith("\n"):
        lines[end - 1] += "\n"
    added = [f"{pad}- {yaml_scalar(u, style)}\n" for u in new]
    return "".join(lines[:end] + added + lines[end:])


def _flow_list(chain: Sequence[str]) -> str:
    return "[" + ", ".join(yaml_scalar(k) for k in chain) + "]"


def set_model(text: str, chain: Sequence[str]) -> str:
    """Replace the top-level `model:` value (a scalar, a flow list or a block list), keeping a
    trailing comment; a single key is written as a scalar unless the file used a list."""
    lines = text.splitlines(keepends=True)
    at = _top_key(lines, "model")
    if at is None:
        raise ValueError("no top-level `model:` key")
    head, _, rest = lines[at].rstrip("\n").partition(":")
    m = re.match(r"^\s*(.*?)(\s+#.*)?$", rest)
    value, tail = (m.group(1), m.group(2) or "") if m else (rest, "")
    nl = "\n" if lines[at].endswith("\n") else ""
    if value.strip():  # inline: scalar or flow list
        was_list = value.strip().startswith("[")
        new = _flow_list(chain) if was_list or len(chain) > 1 else yaml_scalar(chain[0])
        lines[at] = f"{head}: {new}{tail}{nl}"
        return "".join(lines)
    end = _block_end(lines, at)
    items = [i for i in range(at + 1, end) if ITEM.match(lines[i])]
    if not items:
        raise ValueError("`model:` has neither an inline value nor `- key` items")
    pad = ITEM.match(lines[items[0]]).group(1)  # type: ignore[union-attr]
    block = [f"{pad}- {yaml_scalar(k)}\n" for k in chain]
    return "".join(lines[:items[0]] + block + lines[items[-1] + 1:])


def set_tier(text: str, tier: str) -> str:
    """Set `metadata.tier` in place: in a flow mapping (`metadata: {tier: fast}`), a block
    mapping (`  tier: fast`), or a new `metadata: {tier: X}` line after `model:`."""
    lines = text.splitlines(keepends=True)
    at = _top_key(lines, "metadata")
    value = yaml_scalar(tier)
    if at is None:
        m_at = _top_key(lines, "model")
        if m_at is None:
            raise ValueError("no top-level `model:` key to place `metadata:` after")
        end = _block_end(lines, m_at)
        return "".join([*lines[:end], f"metadata: {{tier: {value}}}\n", *lines[end:]])
    line = lines[at]
    if "{" in line.split("#")[0]:
        new, n = re.subn(r"(\btier\s*:\s*)('[^']*'|\"[^\"]*\"|[^,}\s]+)", rf"\g<1>{value}", line,
                         count=1)
        if not n:
            new = line.replace("{", f"{{tier: {value}, ", 1).replace(", }", "}")
        lines[at] = new
        return "".join(lines)
    end = _block_end(lines, at)
    for i in range(at + 1, end):
        m = re.match(r"^(\s+tier\s*:\s*)(\S.*?)(\s+#.*)?$", lines[i].rstrip("\n"))
        if m:
            lines[i] = f"{m.group(1)}{value}{m.group(3) or ''}\n"
            return "".join(lines)
    pad = next((" " * _indent(lines[i]) for i in range(at + 1, end)
                if not _skippable(lines[i])), "  ")
    return "".join([*lines[:at + 1], f"{pad}tier: {value}\n", *lines[at + 1:]])


def edit_text(text: str, edit: RouteEdit) -> str:
    """One route file's text with `edit` made; the result is parsed and checked to hold
    exactly the intended change (ValueError naming what went wrong otherwise)."""
    before = _parse(text)
    new = add_utterances(text, edit.add_utterances)
    if edit.model is not None:
        new = set_model(new, edit.model)
    if edit.tier is not None:
        new = set_tier(new, edit.tier)
    after = _parse(new)
    want = dict(before)
    want["utterances"] = [*before["utterances"], *edit.add_utterances]
    if edit.model is not None:
        model = before.get("model")
        want["model"] = list(edit.model) if isinstance(model, list) or len(edit.model) > 1 \
            else edit.model[0]
    if edit.tier is not None:
        want["metadata"] = {**(before.get("metadata") or {}), "tier": edit.tier}
    if after != want:
        changed = sorted(k for k in {*want, *after} if want.get(k) != after.get(k))
        raise ValueError(f"the text edit did not give the intended YAML (fields "
                         f"{', '.join(changed)} differ); edit the file by hand")
    return new


def make_patch(directory: str | Path, edits: Iterable[RouteEdit]) -> RoutePatch:
    """A patch making `edits` (at most one per file is expected; several are merged)."""
    patch = RoutePatch(Path(directory))
    merged: dict[Path, RouteEdit] = {}
    for e in edits:
        old = merged.get(e.file)
        merged[e.file] = e if old is None else RouteEdit(
            e.route, e.file, old.add_utterances + e.add_utterances,
            e.model if e.model is not None else old.model,
            e.tier if e.tier is not None else old.tier)
    for path, e in merged.items():
        if not e.add_utterances and e.model is None and e.tier is None:
            continue
        old_text = path.read_text(encoding="utf-8")
        try:
            patch.files[path] = (old_text, edit_text(old_text, e))
        except (ValueError, yaml.YAMLError, KeyError, TypeError) as exc:
            patch.problems.append(f"{path}: route '{e.route}': {exc}")
    return patch


def apply_patch(patch: RoutePatch, *, profile: str | None = None) -> list[Path]:
    """Write the patch: first a copy of the routes folder with it applied must load (else
    `ConfigError` and nothing is written), then each file is replaced atomically."""
    if patch.empty:
        return []
    with tempfile.TemporaryDirectory(prefix="semroute-suggest-") as tmp:
        copy = Path(tmp) / patch.directory.name
        shutil.copytree(patch.directory, copy, ignore=shutil.ignore_patterns("*.db*"))
        for path, (_, new) in patch.files.items():
            (copy / path.relative_to(patch.directory)).write_text(new, encoding="utf-8")
        try:
            load_routes(copy, profile=profile)
        except ConfigError as exc:
            raise ConfigError([p.replace(str(copy), str(patch.directory))
                               for p in exc.problems]
                              + ["the patch was not applied: nothing was written"]) from None
    for path, (old, _) in patch.files.items():
        if path.read_text(encoding="utf-8") != old:
            raise ConfigError([f"{path}: changed since the patch was made; run "
                               f"`semroute suggest` again (nothing was written)"])
    return [write_atomic(path, new.encode("utf-8")) for path, (_, new) in patch.files.items()]
