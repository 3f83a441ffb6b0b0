"""The layout grammar's verdicts on index records and file roles, at their boundaries: which
records a deletion accepts (a 255-byte name, as the filesystem does; never a non-step folder)
and which files a step owns (anything else is foreign and kept). Each case kills mutants of
``ckpt_tui/layout.py`` listed in mutation/report.md.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckpt_tui import layout

STEP = "team/exp/checkpoints/checkpoint_100"


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """split_relpath and validate_step_record remember answers: clear them so the rules
    decide, not an answer an earlier test left behind."""
    caches = (layout.split_relpath, layout.validate_step_record, layout.role_of)
    for cached in caches:
        cached.cache_clear()
    yield
    for cached in caches:
        cached.cache_clear()


@pytest.mark.parametrize(
    "name",
    ["a" * 255, "é" * 127, "€" * 85, "a" * 256, "é" * 128, "€" * 86],
    ids=["255-ascii", "254-bytes-2", "255-bytes-3", "256-ascii", "256-bytes-2", "258-bytes-3"],
)
def test_a_record_name_is_accepted_exactly_when_the_filesystem_takes_it(
    tmp_path: Path, name: str
) -> None:
    """255 bytes is the filesystem's limit for one name, counted in UTF-8, not characters."""
    try:
        (tmp_path / name).touch()
        fits = True
    except OSError as err:
        assert err.errno == errno.ENAMETOOLONG
        fits = False
    assert fits == (len(name.encode()) <= 255)
    expected = (*STEP.split("/"), "layer_0", name) if fits else None
    assert layout.validate_file_record(STEP, f"layer_0/{name}") == expected
    assert layout.is_safe_component(name) is fits


def test_unsafe_components_are_refused() -> None:
    """deletion.py checks each component of a row on its own, not only split paths."""
    for name in ("", ".", "..", "a/b", "/", "a\0b"):
        assert layout.is_safe_component(name) is False, repr(name)
    for name in ("a", "...", "a.b", "-", " "):
        assert layout.is_safe_component(name) is True, repr(name)


@pytest.mark.parametrize(
    ("relpath", "valid"),
    [
        (STEP, True),
        ("team/exp/checkpoint-500", True),
        ("sae/run1/12288", True),
        ("sae/run1/final_40960", True),
        ("team/exp/notes", False),
        ("team/exp/checkpoint_x", False),
        ("team/exp", False),
        ("team/../checkpoint_100", False),
    ],
)
def test_a_step_record_must_end_in_a_step_folder(relpath: str, valid: bool) -> None:
    """A row naming another folder as a step is refused: deleting it whole would take
    whatever that folder holds."""
    expected = tuple(relpath.split("/")) if valid else None
    assert layout.validate_step_record(relpath) == expected
    assert layout.validate_file_record(relpath, "model.safetensors") == (
        None if expected is None else (*expected, "model.safetensors")
    )


def test_a_file_record_is_the_step_then_the_path_inside_it() -> None:
    assert layout.validate_file_record(STEP, "layer_3/checkpoint.safetensors") == (
        "team",
        "exp",
        "checkpoints",
        "checkpoint_100",
        "layer_3",
        "checkpoint.safetensors",
    )
    for inner in ("../checkpoint_200/x", "/etc/passwd", "layer_0//x", ""):
        assert layout.validate_file_record(STEP, inner) is None, inner


def test_a_layout_it_does_not_know_owns_no_file() -> None:
    """A step row with a layout this version does not know (a newer index): every file is
    foreign, so none goes with the step."""
    for relparts in (("model.safetensors",), ("layer_0", "checkpoint.safetensors")):
        assert layout.file_role("a_future_layout", relparts) == layout.ROLE_FOREIGN


@pytest.mark.parametrize(
    ("relparts", "role"),
    [
        (("additional_chat_templates", "tool_use.jinja"), layout.ROLE_ARTIFACT),
        (("additional_chat_templates", "notes.md"), layout.ROLE_FOREIGN),
        (("my_templates", "tool_use.jinja"), layout.ROLE_FOREIGN),
    ],
)
def test_hf_extra_chat_templates_are_only_jinja_files_in_their_folder(
    relparts: tuple[str, ...], role: str
) -> None:
    assert layout.file_role(layout.LAYOUT_HF, relparts) == role


def test_saelens_content_is_read_from_any_iterable_of_names() -> None:
    for names in (["cfg.json", "sparsity.safetensors"], ["sae_weights.safetensors"]):
        assert layout.is_saelens_step(names) is True
        assert layout.is_saelens_step(iter(names)) is True
    assert layout.is_saelens_step(iter(["cfg.json", "notes.txt"])) is False


@pytest.mark.parametrize("root", ["/data/runX", "/data/runX/", "/data/X//"])
def test_a_training_at_the_root_is_named_by_the_roots_folder(root: str) -> None:
    assert layout.training_name((), root) == root.rstrip("/").rsplit("/", 1)[1]
