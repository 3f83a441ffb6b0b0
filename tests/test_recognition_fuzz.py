"""Property tests of step recognition on random real trees (the walker, no index).

Trees are built from the names that matter (step-like, numeric, layer and DeepSpeed folders;
SAELens, miStudio, HF and foreign files) and walked for real. The walker must find exactly
the steps a plain reading of the rules finds (``_expected``), list every directory once, never
nest steps, and account for every file under a step, each with the role its layout gives.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ckpt_tui import layout
from ckpt_tui.walk import ScannedStep, Walker

DIRS = [
    "checkpoints",
    "checkpoint_1",
    "checkpoint-2",
    "1000",
    "final_5",
    "layer_7",
    "eval",
    "global_step2",
]
FILES = [
    None,  # an empty folder
    "sae_weights.safetensors",
    "cfg.json",
    "sparsity.safetensors",
    "checkpoint.safetensors",
    "model.safetensors",
    "notes.txt",
    "x.safetensors.tmp",
]
ENTRIES = st.lists(
    st.tuples(st.lists(st.sampled_from(DIRS), min_size=1, max_size=3), st.sampled_from(FILES)),
    min_size=1,
    max_size=30,
)
# Shapes the rules single out, tried on every run (hypothesis also searches around them)
SWEEP = [(["checkpoints", "1000", "checkpoint_1"], "checkpoint.safetensors")]
NESTED_SAE = [
    (["checkpoint_1", "1000"], "sae_weights.safetensors"),
    (["checkpoint_1"], "notes.txt"),
]
SAE_IN_SAE = [
    (["1000"], "sae_weights.safetensors"),
    (["1000", "final_5"], "cfg.json"),
    (["1000", "final_5"], "sparsity.safetensors"),
]
EVAL = [(["checkpoints", "eval", "1000"], "notes.txt"), (["checkpoints", "1000"], "cfg.json")]

Tree = tuple[set[tuple[str, ...]], set[tuple[str, ...]]]  # (dirs, files) below the root


def _build(root: Path, entries: list[tuple[list[str], str | None]]) -> Tree:
    dirs: set[tuple[str, ...]] = set()
    files: set[tuple[str, ...]] = set()
    for parts, name in entries:
        d = tuple(parts)
        (root / Path(*d)).mkdir(parents=True, exist_ok=True)
        dirs.update(d[:i] for i in range(1, len(d) + 1))
        if name is not None:
            (root / Path(*d) / name).write_bytes(b"\0" * 16)
            files.add((*d, name))
    return dirs, files


def _children(tree: Tree, d: tuple[str, ...]) -> tuple[list[str], set[str]]:
    dirs, files = tree
    n = len(d)
    sub = sorted({p[n] for p in dirs if len(p) == n + 1 and p[:n] == d})
    return sub, {p[n] for p in files if len(p) == n + 1 and p[:n] == d}


def _is_step(tree: Tree, d: tuple[str, ...]) -> bool:
    """The rules as written: a checkpoint_<n> is a step unless it holds step folders; a
    <n>/final_<n> only when it holds SAELens weights (and no step folders)."""
    found = layout.step_candidate(d[-1])
    assert found is not None
    sub, files = _children(tree, d)
    if found[1] == "samples" and not layout.is_saelens_step(files):
        return False
    for c in sub:
        if layout.parse_step_dir(c) is not None:
            return False
        if layout.parse_samples_dir(c) is not None and layout.is_saelens_step(
            _children(tree, (*d, c))[1]
        ):
            return False
    return True


def _expected(tree: Tree, d: tuple[str, ...] = ()) -> dict[str, str]:
    """{step relpath: layout} found by walking the in-memory tree by the rules."""
    out: dict[str, str] = {}
    for c in _children(tree, d)[0]:
        p = (*d, c)
        if layout.step_candidate(c) is not None and _is_step(tree, p):
            has_layers = any(layout.parse_layer_dir(x) for x in _children(tree, p)[0])
            out["/".join(p)] = layout.step_layout(c, has_layers)
        else:
            out.update(_expected(tree, p))
    return out


def _walk(root: Path) -> tuple[list[ScannedStep], int]:
    steps: list[ScannedStep] = []
    walker = Walker(str(root), {}, steps.extend, lambda _s, _p: None)
    stats = walker.walk()
    return steps, stats.dirs


@given(ENTRIES)
@example(SWEEP)
@example(NESTED_SAE)
@example(SAE_IN_SAE)
@example(EVAL)
@settings(max_examples=300, deadline=None)
def test_walker_finds_the_steps_the_rules_name(entries: list[tuple[list[str], str | None]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        tree = _build(root, entries)
        steps, dirs_listed = _walk(root)
    expected = _expected(tree)
    assert {s.relpath: s.layout for s in steps} == expected
    assert len(steps) == len(expected), "a step was emitted twice"
    assert dirs_listed == len(tree[0]) + 1, "every directory is listed exactly once"
    rels = [s.relpath for s in steps]
    nested = [(a, b) for a in rels for b in rels if b.startswith(a + "/")]
    assert not nested, "a step inside a step"
    for s in steps:
        parts = tuple(s.relpath.split("/"))
        assert layout.validate_step_record(s.relpath) == parts
        assert s.training_relpath == "/".join(parts[:-1])
        under = {p[len(parts) :] for p in tree[1] if p[: len(parts)] == parts}
        listed = {tuple(f.relpath.split("/")): f for f in s.files}
        assert set(listed) == under, "every file under a step is listed, once"
        for inner, f in listed.items():
            assert layout.validate_file_record(s.relpath, f.relpath) == (*parts, *inner)
            assert f.role == layout.file_role(s.layout, inner)
            if layout.is_temporary(inner[-1]):
                assert f.role == layout.ROLE_FOREIGN
        artifacts = sum(f.role == layout.ROLE_ARTIFACT for f in s.files)
        assert ("empty" in s.problems) == (not s.files)
        assert ("no checkpoint files" in s.problems) == (bool(s.files) and not artifacts)


@given(
    st.sampled_from(
        [layout.LAYOUT_MISTUDIO, layout.LAYOUT_SINGLE, layout.LAYOUT_HF, layout.LAYOUT_SAELENS]
    ),
    st.lists(st.sampled_from([*DIRS, "a", ".git", "additional_chat_templates"]), max_size=3),
    st.text(min_size=1, max_size=20).filter(lambda n: "/" not in n),
    st.sampled_from(["", ".tmp", ".partial", "~", ".tmp.123"]),
)
@settings(max_examples=500, deadline=None)
def test_a_temporary_file_is_never_an_artifact(
    kind: str, folders: list[str], name: str, suffix: str
) -> None:
    relparts = (*folders, name + suffix)
    role = layout.file_role(kind, relparts)
    assert role in (layout.ROLE_ARTIFACT, layout.ROLE_FOREIGN)
    if suffix:
        assert role == layout.ROLE_FOREIGN, relparts
    if kind != layout.LAYOUT_HF and len(relparts) > 2:
        assert role == layout.ROLE_FOREIGN, relparts  # only HF writes folders of its own
