"""The filesystem layer's promises, in-process (so mutation testing sees them): what
``fs.delete_steps`` removes and keeps, checked by walking the disk; the bytes it reports
freed, against ``os.stat`` taken before; the one-line messages a user reads (bad roots,
per-file errors, the batch stopping); the lines ``-v`` logs and the warnings stderr shows;
and that a long run holds a bounded number of fds.

The trees are real folders in ``tmp_path``. Faults root cannot get for real (EIO, EACCES,
EPERM on rmdir, another device) are made by one OS call raising, for one named path, and each
test says so. Killing the mutants of ``ckpt_tui/fs.py`` listed in mutation/report.md.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ckpt_tui import fs
from ckpt_tui.errors import RootError
from ckpt_tui.types import Outcome, PlannedFile

STEP = ("train", "checkpoints", "checkpoint_100")  # components from the root
Dirs = list[tuple[tuple[str, ...], list[str]]]


# ----------------------------------------------------------------------------- helpers


def _write(path: Path, size: int = 5000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))  # real blocks on disk, not a hole
    return path


def _planned(root: Path, path: Path, file_id: int = 1) -> PlannedFile:
    """The identity the scan would have recorded for ``path``, taken now."""
    st = os.lstat(path)
    link = stat.S_ISLNK(st.st_mode)
    return PlannedFile(
        file_id,
        path.relative_to(root).parts,
        0 if link else st.st_size,
        st.st_blocks * 512,
        st.st_ino,
        st.st_mtime_ns,
        st.st_nlink,
        is_symlink=link,
        dev=st.st_dev,
    )


def _tree(root: Path) -> set[str]:
    """Every directory and file under ``root``, relative, as the disk has them now."""
    out: set[str] = set()
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            out.add(os.path.relpath(os.path.join(top, name), root))
    return out


def _delete(
    root: Path,
    work: list[tuple[tuple[str, ...], list[PlannedFile], bool]],
    should_stop: Callable[[], bool] = lambda: False,
    *,
    outcomes: list[fs.FileOutcome] | None = None,
    dirs: Dirs | None = None,
) -> tuple[list[fs.FileOutcome], Dirs]:
    """Run ``delete_steps``; pass the lists to keep what it reported when it raises."""
    outcomes = [] if outcomes is None else outcomes
    dirs = [] if dirs is None else dirs
    fs.delete_steps(
        fs.check_root(str(root)),
        work,
        outcomes.append,
        lambda parts, removed: dirs.append((parts, removed)),
        should_stop,
    )
    return outcomes, dirs


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


LATER = ("train", "checkpoints", "checkpoint_200")


def _with_later_step(root: Path) -> tuple[Path, tuple[tuple[str, ...], list[PlannedFile], bool]]:
    c = _write(_step(root, LATER) / "layer_0" / "c.safetensors")
    return c, (LATER, [_planned(root, c, 9)], True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


def _step(root: Path, step: tuple[str, ...] = STEP) -> Path:
    return root.joinpath(*step)


# ----------------------------------------------------------------------------- roots


def test_bad_roots_are_refused_with_their_one_line_message(root: Path) -> None:
    (root / "file").write_text("x")
    (root / "link").symlink_to(root / "file")
    cases = {
        "": "root path is empty",
        str(root / "missing"): f"root {root}/missing does not exist",
        str(root / "file" / "below"): f"root {root}/file/below cannot be read: "
        "Not a directory (ENOTDIR)",
        str(root / "link"): f"root {root}/link is a symlink; pass the directory it points to",
        str(root / "file"): f"root {root}/file is not a directory",
        "/": "refusing to use / as a root",
    }
    for path, message in cases.items():
        with pytest.raises(RootError) as err:
            fs.check_root(path)
        assert str(err.value) == message, path
    assert fs.check_root(str(root)).path == str(root)


def test_root_that_cannot_be_opened_names_the_os_error(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root opens any directory: the open of this one is made to fail with EACCES.
    real_open = os.open

    def refusing_open(path: object, flags: int, *args: object, **kw: object) -> int:
        if path == str(root):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(RootError) as err:
        fs.check_root(str(root))
    assert str(err.value) == f"root {root} cannot be opened: Permission denied (EACCES)"


# ----------------------------------------------------------------------------- bytes freed


def test_freed_bytes_are_the_files_size_and_blocks_only_when_the_last_link_goes(
    root: Path, tmp_path: Path
) -> None:
    step = _step(root)
    alone = _write(step / "layer_0" / "alone.safetensors", 70_000)
    linked = _write(step / "layer_0" / "linked.safetensors", 30_000)
    outside = tmp_path / "outside.safetensors"
    os.link(linked, outside)  # a hard link outside the root keeps the data allocated
    target = _write(tmp_path / "target.bin", 9000)
    (step / "layer_0" / "link.safetensors").symlink_to(target)
    before = {p: os.lstat(p) for p in (alone, linked)}
    content = outside.read_bytes()
    files = [
        _planned(root, alone, 1),
        _planned(root, linked, 2),
        _planned(root, step / "layer_0" / "link.safetensors", 3),
    ]
    outcomes, _ = _delete(root, [(STEP, files, True)])
    freed = {o.file.file_id: (o.outcome, o.freed_bytes, o.freed_disk_bytes) for o in outcomes}
    assert before[alone].st_blocks > 0
    assert freed == {
        1: (Outcome.DELETED, 70_000, before[alone].st_blocks * 512),
        2: (Outcome.DELETED, 0, 0),
        3: (Outcome.DELETED, 0, 0),
    }
    assert outside.read_bytes() == content and os.stat(outside).st_nlink == 1
    assert target.stat().st_size == 9000
    assert not step.exists()


def test_a_file_already_gone_is_reported_and_its_emptied_folder_removed(root: Path) -> None:
    step = _step(root)
    gone = _write(step / "layer_0" / "a.safetensors")
    kept = _write(step / "layer_1" / "b.safetensors")
    planned = _planned(root, gone)
    gone.unlink()  # a run interrupted after this unlink, before its row went
    outcomes, dirs = _delete(root, [(STEP, [planned], False)])
    assert outcomes == [fs.FileOutcome(planned, Outcome.ALREADY_GONE)]
    assert dirs == [(STEP, [str(step / "layer_0")])]
    assert _tree(step) == {"layer_1", "layer_1/b.safetensors"}
    assert kept.exists()


def test_a_folder_a_crashed_run_removed_does_not_keep_its_step(root: Path) -> None:
    """An interrupted run unlinked the file and removed its layer folder, not the step: the
    next run finds both gone and removes the step."""
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors")
    planned = _planned(root, a)
    a.unlink()
    (step / "layer_0").rmdir()
    outcomes, dirs = _delete(root, [(STEP, [planned], False)])
    assert outcomes == [fs.FileOutcome(planned, Outcome.ALREADY_GONE)]
    assert dirs == [(STEP, [str(step)])] and not step.exists()


def test_a_file_removed_by_another_process_before_our_unlink_is_already_gone(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors")
    planned = _planned(root, a)
    real_unlink = os.unlink

    def racing_unlink(name: str, *, dir_fd: int) -> None:
        # The window between our stat and unlink cannot be hit on purpose: another process
        # wins it here (the file really goes), so our unlink finds nothing.
        real_unlink(name, dir_fd=dir_fd)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", name)

    monkeypatch.setattr(os, "unlink", racing_unlink)
    outcomes, dirs = _delete(root, [(STEP, [planned], False)])
    assert outcomes == [fs.FileOutcome(planned, Outcome.ALREADY_GONE)]  # nothing freed by us
    assert dirs == [(STEP, [str(step / "layer_0"), str(step)])] and not step.exists()


def test_io_error_on_an_unlink_stops_the_batch_with_the_files_path(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors")
    c, later = _with_later_step(root)
    _fail_for(monkeypatch, "unlink", a, errno.EIO)  # a failing disk; root cannot make one
    with pytest.raises(fs.StopBatch) as stop:
        _delete(root, [(STEP, [_planned(root, a)], True), later])
    assert str(stop.value) == f"{a}: Input/output error"
    assert a.exists() and c.exists()


def test_a_step_emptied_deep_down_goes_up_to_the_step(root: Path) -> None:
    """Not planned whole, every file planned: each emptied folder goes, deepest first, then
    the step; never the folders above it."""
    step = _step(root)
    a = _write(step / "layer_0" / "sub" / "deeper" / "a.safetensors")
    _, dirs = _delete(root, [(STEP, [_planned(root, a)], False)])
    assert dirs == [
        (
            STEP,
            [
                str(step / "layer_0" / "sub" / "deeper"),
                str(step / "layer_0" / "sub"),
                str(step / "layer_0"),
                str(step),
            ],
        )
    ]
    assert _tree(root) == {"train", "train/checkpoints"}


# ----------------------------------------------------------------------------- what stays


def test_a_step_planned_whole_loses_its_empty_layer_folders_not_other_folders(
    root: Path,
) -> None:
    """Debris (an empty layer_9 from an older cleaner) goes with a whole step; a folder not
    named like a layer may have appeared since the scan and stays, and so does the step."""
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors")
    (step / "layer_9").mkdir(parents=True)
    (step / "tmp").mkdir()
    _, dirs = _delete(root, [(STEP, [_planned(root, a)], True)])
    assert _tree(step) == {"tmp"}
    assert sorted(dirs[0][1]) == [str(step / "layer_0"), str(step / "layer_9")]


def test_a_step_with_no_files_planned_whole_loses_every_empty_folder(root: Path) -> None:
    step = _step(root)
    (step / "tmp" / "x").mkdir(parents=True)
    (step / "layer_2").mkdir()
    _, dirs = _delete(root, [(STEP, [], True)])
    assert not step.exists() and _tree(root) == {"train", "train/checkpoints"}
    assert str(step) in dirs[0][1]


def test_a_step_not_planned_whole_keeps_the_folders_that_were_empty_before(root: Path) -> None:
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors")
    _write(step / "layer_1" / "kept.safetensors")
    (step / "layer_9").mkdir()
    _, dirs = _delete(root, [(STEP, [_planned(root, a)], False)])
    assert _tree(step) == {"layer_1", "layer_1/kept.safetensors", "layer_9"}
    assert dirs == [(STEP, [str(step / "layer_0")])]


def test_a_folder_kept_deep_in_one_layer_does_not_keep_another_layer(root: Path) -> None:
    step = _step(root)
    deep = _write(step / "layer_0" / "a" / "b" / "x.safetensors")
    _write(step / "layer_0" / "a" / "b" / "notes.txt")  # not planned: b, a, layer_0 stay
    y = _write(step / "layer_1" / "y.safetensors")
    _delete(root, [(STEP, [_planned(root, deep, 1), _planned(root, y, 2)], False)])
    assert _tree(step) == {"layer_0", "layer_0/a", "layer_0/a/b", "layer_0/a/b/notes.txt"}


def _chain(top: Path, depth: int) -> None:
    top.joinpath(*["d"] * depth).mkdir(parents=True)


def test_empty_folders_are_looked_for_sixteen_deep_in_every_branch(root: Path) -> None:
    """Two branches of empty folders 16 deep (the limit) go with their step; in the next
    step a chain one folder deeper is past the limit, so it and its step stay."""
    step = _step(root)
    _chain(step / "a", fs.MAX_SWEEP_DEPTH - 1)  # a/d/.../d: 16 folders below the step
    _chain(step / "b", fs.MAX_SWEEP_DEPTH - 1)
    deeper = ("train", "checkpoints", "checkpoint_200")
    _chain(_step(root, deeper) / "c", fs.MAX_SWEEP_DEPTH)  # 17 folders below the step
    before = _tree(_step(root, deeper))
    _delete(root, [(STEP, [], True), (deeper, [], True)])
    assert not step.exists()
    assert _tree(_step(root, deeper)) == before


def test_cancel_ends_the_step_after_the_current_file_and_removes_what_it_emptied(
    root: Path,
) -> None:
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors")
    b = _write(step / "layer_1" / "b.safetensors")
    (step / "layer_9").mkdir()  # would go with the step, had it finished
    later = ("train", "checkpoints", "checkpoint_200")
    c = _write(_step(root, later) / "layer_0" / "c.safetensors")
    work = [
        (STEP, [_planned(root, a, 1), _planned(root, b, 2)], True),
        (later, [_planned(root, c, 3)], True),
    ]
    outcomes: list[fs.FileOutcome] = []
    # the user cancels while the first file is deleted
    _, dirs = _delete(root, work, lambda: len(outcomes) >= 1, outcomes=outcomes)
    assert [(o.file.file_id, o.outcome) for o in outcomes] == [(1, Outcome.DELETED)]
    assert dirs == [(STEP, [str(step / "layer_0")])]
    assert _tree(step) == {"layer_1", "layer_1/b.safetensors", "layer_9"}
    assert c.exists()


def test_a_symlinked_folder_in_a_whole_step_is_never_entered_nor_warned_about(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ckpt_tui.fs")
    step = _step(root)
    outside = tmp_path / "outside"
    (outside / "layer_0").mkdir(parents=True)
    step.mkdir(parents=True)
    (step / "layer_5").symlink_to(outside, target_is_directory=True)
    _delete(root, [(STEP, [], True)])
    assert [r.getMessage() for r in caplog.records] == []
    assert _tree(step) == {"layer_5"} and (step / "layer_5").is_symlink()
    assert (outside / "layer_0").is_dir()


# ----------------------------------------------------------------------------- faults


def _fail_for(monkeypatch: pytest.MonkeyPatch, call: str, path: Path, code: int) -> None:
    """Make ``os.<call>`` raise ``code`` for ``path`` alone (named by fd, dir_fd + name or a
    path); every other call goes to the real one."""
    real = getattr(os, call)

    def target(args: tuple[object, ...], kw: dict[str, object]) -> str | None:
        first = args[0] if args else kw.get("path")
        if isinstance(first, int):
            return _fd_path(first)
        if first is None:
            return None
        name = os.fsdecode(os.fspath(first))  # type: ignore[call-overload]
        dir_fd = kw.get("dir_fd")
        return os.path.join(_fd_path(dir_fd), name) if isinstance(dir_fd, int) else name

    def failing(*args: object, **kw: object) -> object:
        if target(args, kw) == str(path):
            raise OSError(code, os.strerror(code), str(path))
        return real(*args, **kw)

    monkeypatch.setattr(os, call, failing)


def test_a_mount_point_inside_the_step_is_refused_by_name(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors")
    b = _write(step / "layer_1" / "b.safetensors")
    mounted_ino = (step / "layer_0").stat().st_ino
    real_fstat = os.fstat

    def fstat(fd: int) -> os.stat_result:
        # A real mount needs privileges and a device: layer_0 reports another st_dev.
        st = real_fstat(fd)
        if st.st_ino == mounted_ino:
            return os.stat_result((*st[:2], st.st_dev + 1, *st[3:]))
        return st

    monkeypatch.setattr(os, "fstat", fstat)
    outcomes, _ = _delete(root, [(STEP, [_planned(root, a, 1), _planned(root, b, 2)], True)])
    assert [(o.file.file_id, o.outcome, o.error) for o in outcomes] == [
        (1, Outcome.FAILED, "is a mount point inside the root, refused (EXDEV)"),
        (2, Outcome.DELETED, None),
    ]
    assert _tree(step) == {"layer_0", "layer_0/a.safetensors"}


def test_io_error_on_a_file_stops_the_batch_with_its_path_after_removing_what_was_emptied(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors")
    b = _write(step / "layer_1" / "b.safetensors")
    c, later = _with_later_step(root)
    work = [(STEP, [_planned(root, a, 1), _planned(root, b, 2)], True), later]
    _fail_for(monkeypatch, "stat", b, errno.EIO)  # a failing disk; root cannot make one
    outcomes: list[fs.FileOutcome] = []
    dirs: Dirs = []
    with pytest.raises(fs.StopBatch) as stop:
        _delete(root, work, outcomes=outcomes, dirs=dirs)
    assert str(stop.value) == f"{b}: Input/output error"
    assert [o.file.file_id for o in outcomes] == [1]
    assert dirs == [(STEP, [str(step / "layer_0")])]
    assert _tree(step) == {"layer_1", "layer_1/b.safetensors"} and c.exists()


def test_after_a_stop_a_folder_that_cannot_be_removed_ends_the_clean_up_quietly(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user is told the first error (the file's), not the clean-up's; the folders removed
    before it are still reported."""
    step = _step(root)
    a = _write(step / "layer_0" / "sub" / "a.safetensors")
    b = _write(step / "layer_1" / "b.safetensors")
    work = [(STEP, [_planned(root, a, 1), _planned(root, b, 2)], True)]
    _fail_for(monkeypatch, "stat", b, errno.EIO)  # failing disk: file and folder
    _fail_for(monkeypatch, "rmdir", step / "layer_0", errno.EIO)
    dirs: Dirs = []
    with pytest.raises(fs.StopBatch) as stop:
        _delete(root, work, dirs=dirs)
    assert str(stop.value) == f"{b}: Input/output error"
    assert dirs == [(STEP, [str(step / "layer_0" / "sub")])]
    assert _tree(step) == {"layer_0", "layer_1", "layer_1/b.safetensors"}


def test_io_error_removing_a_folder_stops_the_batch_with_the_folders_path(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors")
    c, later = _with_later_step(root)
    _fail_for(monkeypatch, "rmdir", step / "layer_0", errno.EIO)  # failing disk
    with pytest.raises(fs.StopBatch) as stop:
        _delete(root, [(STEP, [_planned(root, a)], True), later])
    assert str(stop.value) == f"{step / 'layer_0'}: Input/output error"
    assert _tree(step) == {"layer_0"} and c.exists()


def test_io_error_listing_a_folder_stops_the_batch_with_the_folders_path(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors")
    (step / "layer_9").mkdir()
    c, later = _with_later_step(root)
    _fail_for(monkeypatch, "scandir", step / "layer_9", errno.EIO)  # failing disk
    dirs: Dirs = []
    with pytest.raises(fs.StopBatch) as stop:
        _delete(root, [(STEP, [_planned(root, a)], True), later], dirs=dirs)
    assert str(stop.value) == f"{step / 'layer_9'}: Input/output error"
    assert [p for p, _ in dirs] == [STEP] and c.exists()


def test_unreadable_empty_folders_of_a_whole_step_are_still_removed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = _step(root)
    for name in ("layer_7", "layer_8"):
        (step / name).mkdir(parents=True)
        # Root lists any folder: the listing of these two is made to fail with EACCES.
        _fail_for(monkeypatch, "scandir", step / name, errno.EACCES)
    _delete(root, [(STEP, [], True)])
    assert not step.exists()


def test_a_folder_that_cannot_be_removed_is_warned_about_a_foreign_file_is_not(
    root: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ckpt_tui.fs")
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors")
    _write(step / "layer_0" / "notes.txt")  # not planned: layer_0 is not empty, quietly
    b = _write(step / "layer_1" / "b.safetensors")
    # Root may remove any empty folder: this rmdir is made to fail with EPERM.
    _fail_for(monkeypatch, "rmdir", step / "layer_1", errno.EPERM)
    _delete(root, [(STEP, [_planned(root, a, 1), _planned(root, b, 2)], True)])
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot remove directory {step / 'layer_1'}: Operation not permitted (EPERM)"
    ]
    assert _tree(step) == {"layer_0", "layer_0/notes.txt", "layer_1"}


# ----------------------------------------------------------------------------- -v and fds


def test_verbose_lines_name_each_file_and_folder_removed(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ckpt_tui.fs")
    step = _step(root)
    a = _write(step / "layer_0" / "a.safetensors", 5000)
    _, dirs = _delete(root, [(STEP, [_planned(root, a)], True)])
    assert [r.getMessage() for r in caplog.records] == [
        f"deleted file {a} (5000 bytes)",
        f"deleted empty layer directory {step / 'layer_0'}",
        f"deleted empty step directory {step}",
    ]
    assert dirs == [(STEP, [str(step / "layer_0"), str(step)])]


def test_a_long_run_holds_a_bounded_number_of_fds(root: Path) -> None:
    """Between steps only the root and the folders above the steps stay open (each opened
    once), so a prune of thousands of steps cannot run out of fds; none is left open after."""
    steps = [("train", "checkpoints", f"checkpoint_{n}") for n in (100, 200, 300, 400)]
    work = []
    for i, parts in enumerate(steps):
        files = [
            _write(_step(root, parts) / layer / name)
            for layer, name in (("layer_0", "a"), ("layer_0", "b"), ("layer_1", "c"))
        ]
        work.append((parts, [_planned(root, f, 10 * i + j) for j, f in enumerate(files)], True))
    before = _open_fds()
    seen: list[int] = []
    fs.delete_steps(
        fs.check_root(str(root)),
        work,
        lambda o: None,
        lambda p, r: seen.append(_open_fds()),
        lambda: False,
    )
    # the root and train/, train/checkpoints/: one fd each
    assert seen == [before + 3] * len(steps)
    assert _open_fds() == before
    assert _tree(root) == {"train", "train/checkpoints"}


# ----------------------------------------------------------------------------- what is left


def test_files_left_in_a_step_are_listed_without_following_links_sixteen_deep(
    root: Path, tmp_path: Path
) -> None:
    """After a run, what is left in a step folder is reported (``appeared``): every
    non-folder entry 16 folders deep, a symlinked folder as an entry, never entered."""
    step = _step(root)
    _write(step / "top.bin")
    _write(step / "layer_0" / "b.safetensors")
    os.mkfifo(step / "layer_0" / "pipe")
    outside = tmp_path / "outside"
    _write(outside / "never.bin")
    (step / "link").symlink_to(outside, target_is_directory=True)
    deep = step.joinpath(*["d"] * fs.MAX_SWEEP_DEPTH)
    _write(deep / "deep.bin")  # in the 16th folder below the step: listed
    _write(deep / "d" / "too_deep.bin")  # in the 17th: not
    listed = fs.list_files(fs.check_root(str(root)), STEP)
    assert sorted("/".join(p[len(STEP) :]) for p in listed) == sorted(
        [
            "top.bin",
            "layer_0/b.safetensors",
            "layer_0/pipe",
            "link",
            "/".join(["d"] * 16) + "/deep.bin",
        ]
    )
    assert all(p[: len(STEP)] == STEP for p in listed)
    assert fs.list_files(fs.check_root(str(root)), (*STEP[:2], "checkpoint_999")) == []


def test_files_left_are_listed_up_to_a_thousand(root: Path) -> None:
    step = _step(root)
    step.mkdir(parents=True)
    for i in range(fs.MAX_LISTED):
        (step / f"f{i}").touch()
    _write(step / "sub" / "one_more.bin")
    listed = fs.list_files(fs.check_root(str(root)), STEP)
    assert sorted(p[-1] for p in listed) == sorted(f"f{i}" for i in range(fs.MAX_LISTED))


# ----------------------------------------------------------------------------- above the steps


def test_folders_above_a_training_deleted_whole_go_only_when_empty(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ckpt_tui.fs")
    (root / "team" / "train" / "checkpoints").mkdir(parents=True)
    _write(root / "other" / "checkpoints" / "notes.txt")
    before = _open_fds()
    removed = fs.remove_empty_dirs(
        fs.check_root(str(root)),
        [
            ("other", "checkpoints"),  # a file the index never knew: kept, quietly
            ("other",),
            (),  # the root itself: never, and the folders after it are still tried
            ("team", "train", "checkpoints"),
            ("team", "train"),
        ],
    )
    expected = [str(root / "team" / "train" / "checkpoints"), str(root / "team" / "train")]
    assert removed == expected
    assert [r.getMessage() for r in caplog.records] == [
        f"deleted emptied training directory {p}" for p in expected
    ]
    assert _tree(root) == {"team", "other", "other/checkpoints", "other/checkpoints/notes.txt"}
    assert _open_fds() == before


def test_io_error_removing_a_folder_above_the_steps_stops_with_its_path(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (root / "team" / "train").mkdir(parents=True)
    _fail_for(monkeypatch, "rmdir", root / "team" / "train", errno.EIO)  # failing disk
    with pytest.raises(fs.StopBatch) as stop:
        fs.remove_empty_dirs(fs.check_root(str(root)), [("team", "train"), ("team",)])
    assert str(stop.value) == f"{root / 'team' / 'train'}: Input/output error"
    assert _tree(root) == {"team", "team/train"}


def test_a_root_replaced_since_the_scan_is_refused_by_name(root: Path, tmp_path: Path) -> None:
    a = _write(_step(root) / "layer_0" / "a.safetensors")
    handle = fs.check_root(str(root))
    planned = _planned(root, a)
    root.rename(tmp_path / "moved")
    _write(_step(root) / "layer_0" / "a.safetensors")  # another tree at the same path
    with pytest.raises(RootError) as err:
        fs.delete_steps(
            handle, [(STEP, [planned], True)], lambda o: None, lambda p, r: None, lambda: False
        )
    assert str(err.value) == f"root {root} was replaced since it was indexed"
    assert (root / STEP[0]).exists() and (tmp_path / "moved" / STEP[0]).exists()


def test_disk_usage_is_what_the_filesystem_says(root: Path) -> None:
    ours = fs.disk_usage(str(root))
    theirs = shutil.disk_usage(root)
    slack = theirs.total // 100  # others write to this disk between the two calls
    assert ours.total == theirs.total
    assert abs(ours.used - theirs.used) <= slack and abs(ours.free - theirs.free) <= slack
