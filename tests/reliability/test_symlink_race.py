"""A directory swapped for a symlink between the check and the delete must not redirect it.

The hook swaps ``layer_0`` (or the whole step directory) for a symlink to the victim right
before the deleter's unlink/stat of a file in it. By then the deleter already holds fds on the
directories, so what these tests prove is fd pinning: every unlink/rmdir is relative to an fd
opened before the swap, never a path string. A control runs a naive path-based delete over
the very same swap and shows the victim losing files, so this test is known to be able to fail.

They pass with ``O_NOFOLLOW`` removed. The swap that lands *before* any fd is opened, which
only ``O_NOFOLLOW`` stops, is
``tests/test_promises_deletion.py::test_directory_swapped_for_a_symlink_before_the_deletion_starts``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ckpt_tui import fs
from ckpt_tui.service import CheckpointService
from ckpt_tui.types import Outcome, Plan

from .conftest import Victim, build_tree, index_files, make_victim, scan


def _swap(target: Path, victim: Path) -> None:
    """Move the real directory aside and put a symlink to the victim in its place."""
    target.rename(target.with_name(target.name + ".moved"))
    target.symlink_to(victim, target_is_directory=True)


def _hook(call: str, when: Callable[[str], bool], action: Callable[[], None]) -> Callable[..., Any]:
    """Wrap ``os.<call>``: run ``action`` once, right before the first call ``when`` accepts."""
    real = getattr(os, call)
    fired = [False]

    def wrapper(path: Any, *args: Any, dir_fd: int | None = None, **kw: Any) -> Any:
        full = os.fsdecode(path)
        if dir_fd is not None:
            full = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), full)
        if not fired[0] and when(os.path.abspath(full)):
            fired[0] = True
            action()
        return (
            real(path, *args, dir_fd=dir_fd, **kw)
            if dir_fd is not None
            else real(path, *args, **kw)
        )

    return wrapper


def _naive_delete(plan: Plan) -> None:
    """What the old clean-up did: join the root and the record, unlink the path string."""
    for f in plan.files:
        os.unlink(os.path.join(plan.root, *f.relparts))


async def _plan_step(root: Path, db: Path, step: int) -> tuple[CheckpointService, Plan]:
    svc = await CheckpointService.open(str(db))
    root_id = await scan(svc, root)
    steps = await svc.steps((await svc.trainings(root_id))[0].id)
    sid = next(s.id for s in steps if s.step == step)
    return svc, await svc.plan_steps(root_id, [sid], force=True)


SHAPES = {
    # (what is swapped, the OS call the swap lands right before)
    "layer-before-unlink": ("layer", "unlink"),
    "layer-before-stat": ("layer", "stat"),
    "step-before-unlink": ("step", "unlink"),
    "step-before-stat": ("step", "stat"),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_swap_to_symlink_during_deletion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    what, call = SHAPES[shape]
    results: dict[str, tuple[Victim, Any]] = {}
    for mode in ("naive", "safe"):
        base = tmp_path / mode
        victim = make_victim(base / "victim")
        # The victim mirrors a step: checkpoint.safetensors at top and in layer_0/.
        tree = build_tree(base / "root", trainings=1, steps=(100, 200), layers=2)
        step = tree.root / "train_000" / "checkpoints" / "checkpoint_100"
        target = step / "layer_0" if what == "layer" else step
        svc, plan = await _plan_step(tree.root, base / "index.sqlite3", 100)
        assert plan.file_count == 2
        first = str(step / "layer_0" / "checkpoint.safetensors")
        # The naive delete only unlinks, so its swap always lands right before its unlink.
        hook = _hook(
            "unlink" if mode == "naive" else call,
            lambda p, first=first: p == first,
            lambda target=target, v=victim.path: _swap(target, v),
        )
        monkeypatch.setattr(os, "unlink" if mode == "naive" else call, hook)
        try:
            if mode == "naive":
                with contextlib.suppress(FileNotFoundError):
                    _naive_delete(plan)
                results[mode] = (victim, None)
            else:
                results[mode] = (victim, await svc.execute(plan))
        finally:
            monkeypatch.undo()
            await svc.close()

    naive_victim, _ = results["naive"]
    assert not naive_victim.intact(), "control: the naive delete should have hit the victim"

    victim, result = results["safe"]
    victim.assert_intact()
    # The swapped-in symlink is still there (nothing removed or followed it) ...
    base = tmp_path / "safe" / "root" / "train_000" / "checkpoints" / "checkpoint_100"
    swapped = base / "layer_0" if what == "layer" else base
    assert swapped.is_symlink()
    # ... and the user is told: a refusal, or the file deleted inside the real (moved) dir.
    by_path = {r.path: r for r in result.results}
    first = by_path[str(base / "layer_0" / "checkpoint.safetensors")]
    if first.outcome == Outcome.FAILED:
        assert first.error and "symlink" in first.error
        assert not result.ok
    else:
        # The fd was opened before the swap: the unlink went to the real directory.
        assert first.outcome == Outcome.DELETED
        moved = swapped.with_name(swapped.name + ".moved")
        inner = (
            moved / "checkpoint.safetensors"
            if what == "layer"
            else (moved / "layer_0" / "checkpoint.safetensors")
        )
        assert moved.is_dir() and not inner.exists()
    # The index keeps every file it could not delete, with the error.
    rows = {str(r.path): r for r in index_files(tmp_path / "safe" / "index.sqlite3")}
    for r in result.failed:
        assert r.path in rows and rows[r.path].error


async def test_symlinked_dirs_at_scan_time_are_never_followed(
    tmp_path: Path, victim: Victim
) -> None:
    """Both shapes of a symlinked dir present before the scan: refused, victim intact."""
    tree = build_tree(tmp_path / "root", trainings=1, steps=(100, 200, 300), layers=1)
    ck = tree.root / "train_000" / "checkpoints"
    (ck / "checkpoint_100" / "layer_1").symlink_to(victim.path, target_is_directory=True)
    (ck / "checkpoint_150").symlink_to(victim.path, target_is_directory=True)
    async with await CheckpointService.open(str(tmp_path / "index.sqlite3")) as svc:
        root_id = await scan(svc, tree.root)
        rows = index_files(tmp_path / "index.sqlite3")
        assert not [r for r in rows if "victim" in str(r.path) or "checkpoint_150" in str(r.path)]
        # Nothing below a symlinked dir was indexed as a file of the step.
        assert all(
            not str(r.path).startswith(str(ck / "checkpoint_100" / "layer_1") + "/") for r in rows
        )
        plan = await svc.plan_retention(root_id, 1, force=True)
        freeable = sum(
            p.stat().st_size
            for s in ("checkpoint_100", "checkpoint_200")
            for p in (ck / s).rglob("*")
            if p.is_file() and not p.is_symlink()
        )
        result = await svc.execute(plan)
    victim.assert_intact()
    assert result.ok, result.failed
    # The link is not the trainer's: foreign, kept (as a link) and named; its target's bytes
    # are never counted as freed.
    assert [f.path for f in plan.foreign] == [str(ck / "checkpoint_100" / "layer_1")]
    assert result.freed_bytes == freeable
    assert sorted(p.name for p in (ck / "checkpoint_100").iterdir()) == ["layer_1"]
    assert (ck / "checkpoint_100" / "layer_1").is_symlink()
    assert not (ck / "checkpoint_200").exists()
    assert (ck / "checkpoint_150").is_symlink()


def test_fs_refuses_symlinked_directory_component(tmp_path: Path, victim: Victim) -> None:
    """The primitive itself: open_dir_at refuses a symlink (ELOOP / ENOTDIR)."""
    (tmp_path / "link").symlink_to(victim.path, target_is_directory=True)
    fd = os.open(tmp_path, fs.DIR_FLAGS)
    try:
        with pytest.raises(OSError):
            fs.open_dir_at(fd, "link", os.fstat(fd).st_dev)
    finally:
        os.close(fd)
    victim.assert_intact()
