"""Import hygiene: the service and the CLI never import Textual (the CLI's start-up cost and
the layering both depend on it). Checked in a fresh interpreter, through ``sys.modules``."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["ckpt_tui.service", "ckpt_tui.cli"])
def test_importing_never_imports_textual(module: str) -> None:
    code = (
        f"import sys, {module}; "
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.')); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"
