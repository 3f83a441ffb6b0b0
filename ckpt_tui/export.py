"""Exports of the index: ncdu's JSON dump format (``ncdu -f file`` opens it) and CSV."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from ckpt_tui import __version__
from ckpt_tui.types import FileStatus, TrainingTree

NCDU_MAJOR, NCDU_MINOR = 1, 2
CSV_COLUMNS = (
    "training",
    "step",
    "step_path",
    "path",
    "layer",
    "hook",
    "size_bytes",
    "disk_bytes",
    "mtime",
    "status",
    "pinned",
    "step_incomplete",
)

Node = dict[str, Any]


def _dir(name: str) -> Node:
    return {"info": {"name": name}, "children": {}}


def _walk_into(node: Node, parts: list[str]) -> Node:
    for p in parts:
        node = node["children"].setdefault(p, _dir(p))
    return node


def _emit(node: Node) -> list[Any]:
    out: list[Any] = [node["info"]]
    for child in node["children"].values():
        out.append(_emit(child) if "children" in child else child)
    return out


def ncdu(root: str, tree: list[TrainingTree]) -> list[Any]:
    """ncdu's export format: ``[1, 2, {meta}, [root-info, child, [dir-info, ...], ...]]``.

    Only indexed files appear (the export is of the index, not of the whole disk).
    """
    top = _dir(root)
    for t in tree:
        for s in t.steps:
            step_rel = s.step.path[len(root) + 1 :] if s.step.path != root else ""
            step_node = _walk_into(top, [p for p in step_rel.split("/") if p])
            for f in s.files:
                parts = f.relpath.split("/")
                parent = _walk_into(step_node, parts[:-1])
                info: Node = {
                    "name": parts[-1],
                    "asize": f.size_bytes,
                    "dsize": f.disk_bytes,
                    "mtime": f.mtime_ns // 1_000_000_000,
                }
                if f.status in (FileStatus.SYMLINK, FileStatus.SPECIAL):
                    info["notreg"] = True
                parent["children"][parts[-1]] = info
    meta = {"progname": "ckpt-tui", "progver": __version__, "timestamp": int(time.time())}
    return [NCDU_MAJOR, NCDU_MINOR, meta, _emit(top)]


def to_csv(tree: list[TrainingTree]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for t in tree:
        for s in t.steps:
            for f in s.files:
                w.writerow(
                    [
                        t.training.name,
                        s.step.step,
                        s.step.path,
                        f.path,
                        "" if f.layer is None else f.layer,
                        f.hook or "",
                        f.size_bytes,
                        f.disk_bytes,
                        f.mtime_ns // 1_000_000_000,
                        f.status.value,
                        int(s.step.pinned),
                        int(s.step.incomplete),
                    ]
                )
    return buf.getvalue()
