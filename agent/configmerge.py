"""New target entries put into a config file a person wrote (`dutyd discover --merge FILE`),
as text: every byte of the file stays where it was, its comments and layout included (PyYAML
would drop the comments of a file it dumped again), and the file is replaced only whole,
after the result passed the same validation as `dutyd check-config`.

`add_targets` finds the top-level `targets:` sequence with the YAML node tree and inserts the
entries after its last item (the item's own deeper-indented comments stay with it; a comment
at the list's own level or above belongs to what follows), indented as the file's items are.
`targets: []` (or an empty `targets:`) becomes a block list; a file without `targets:` gets one
at its end. A non-empty flow list (`targets: [{...}]`) is refused: there is no text to add to
it that a person would keep.

`replace_checked` writes the new text beside the file (so its `include:` patterns resolve as
the file's), checks that, keeps the old file as `FILE.bak` (with the file's mode and owner:
it may hold secrets) and renames the new text over the file, fsynced: the file is the old one
or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from dutyd.agent.config import SAFE_LOADER

ENTRY_INDENT = 2  # the column of `-` in the entries given to `add_targets`


class MergeRefused(ValueError):
    """The file cannot take the entries as text; the message says why and what to do."""


def add_targets(text: str, entries: Sequence[str]) -> str:
    """`text` with `entries` (lines of sequence items, `-` at column `ENTRY_INDENT`, blank
    and comment lines among them) added to its top-level `targets:` list."""
    try:
        root = yaml.compose(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as exc:
        raise MergeRefused(f"not valid YAML: {exc}") from None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    found = None
    if isinstance(root, yaml.MappingNode):
        found = next(((k, v) for k, v in root.value if k.value == "targets"), None)
    if found is None:
        return "".join(lines) + "targets:\n" + "".join(f"{e}\n" for e in entries)
    key, value = found
    if isinstance(value, yaml.SequenceNode) and value.value and not value.flow_style:
        dash = _dash_column(lines, value.value[0].start_mark)
        after = _last_line_of(lines, value.value[-1].start_mark.line, value.end_mark.line, dash)
        shift = dash - ENTRY_INDENT
        return "".join(
            lines[: after + 1] + [_shifted(e, shift) for e in entries] + lines[after + 1 :]
        )
    empty = (isinstance(value, yaml.SequenceNode) and not value.value) or (
        isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:null"
    )
    if not empty:
        raise MergeRefused(
            f"line {key.start_mark.line + 1}: `targets:` is not written as a block list "
            "(one `- name: ...` entry a line): write it so, and merge again"
        )
    # `targets: []` or `targets: ~`: the value's text goes, the entries follow the key's line.
    start, end = value.start_mark, value.end_mark
    row = key.start_mark.line
    if end.index > start.index and start.line == row:
        line = lines[row]
        lines[row] = line[: start.column].rstrip() + line[end.column :]
    return "".join(lines[: row + 1] + [f"{e}\n" for e in entries] + lines[row + 1 :])


def _dash_column(lines: Sequence[str], mark: yaml.Mark) -> int:
    """The column of the `-` that opens the item starting at `mark`."""
    line = lines[mark.line]
    dash = line.rfind("-", 0, mark.column)
    return dash if dash >= 0 else max(mark.column - 2, 0)


def _last_line_of(lines: Sequence[str], first: int, bound: int, dash: int) -> int:
    """The last line of the list's last item: from its first line up to (not including)
    `bound`, the last line with content, or a comment indented deeper than the item's `-`."""
    last = first
    for row in range(first, min(bound + 1, len(lines))):
        stripped = lines[row].strip()
        if not stripped:
            continue
        indent = len(lines[row]) - len(lines[row].lstrip())
        if stripped.startswith("#"):
            if indent > dash:
                last = row
            continue
        if row > first and indent <= dash:
            break  # the next key or item
        last = row
    return last


def _shifted(entry: str, shift: int) -> str:
    if not entry.strip():
        return "\n"
    if shift >= 0:
        return " " * shift + entry + "\n"
    cut = min(-shift, len(entry) - len(entry.lstrip()))
    return entry[cut:] + "\n"


def replace_checked(path: Path, text: str, check: Callable[[Path], None]) -> Path:
    """Replace the file at `path` (a symlink's target) with `text` once `check(candidate)`
    returned (it raises to refuse: the file is then untouched). Returns the backup's path."""
    real = Path(os.path.realpath(path))
    info = real.stat()
    fd, name = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".merge", dir=real.parent)
    candidate = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        _keep_mode_and_owner(candidate, info)
        check(candidate)
        backup = real.with_name(real.name + ".bak")
        _copy_atomically(real, backup, info)
        os.replace(candidate, real)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
        raise
    _sync_dir(real.parent)
    return backup


def _keep_mode_and_owner(path: Path, info: os.stat_result) -> None:
    os.chmod(path, info.st_mode & 0o7777)
    if (info.st_uid, info.st_gid) != (os.getuid(), os.getgid()):
        try:
            os.chown(path, info.st_uid, info.st_gid)
        except PermissionError:
            raise MergeRefused(
                f"cannot give the new file the owner of the old one (uid {info.st_uid}, "
                f"gid {info.st_gid}): run as that user or root"
            ) from None


def _copy_atomically(source: Path, target: Path, info: os.stat_result) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(source.read_bytes())
            out.flush()
            os.fsync(out.fileno())
        _keep_mode_and_owner(Path(name), info)
        os.replace(name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
