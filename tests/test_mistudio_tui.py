"""The browser with a miStudio database (issue 11): the details panel shows a training's
miStudio status and a step's rows, best flag and loss; the best step and an active training's
steps show their protection. Real PostgreSQL, the real demo tree, the real app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ckpt_tui.demo import DemoTree, build_demo
from ckpt_tui.service import CheckpointService
from ckpt_tui.tui.widgets.details import DetailsPanel
from tests.conftest import fresh_pg_db
from tests.test_mistudio import SCHEMA, MiDB
from tests.tui.conftest import SIZE, goto, make_app, settle

DONE, LIVE = "train_36766f85", "train_9f1c2a0b"  # the demo's two miStudio-style trainings


def steps_of(demo: DemoTree, name: str) -> list[int]:
    ck = demo.root / name / "checkpoints"
    return sorted(int(p.name.split("_")[1]) for p in ck.iterdir())


@pytest.fixture
def demo(tmp_path: Path) -> DemoTree:
    return build_demo(tmp_path / "demo", scale=0.1)


@pytest.fixture
def mi(demo: DemoTree) -> Iterator[MiDB]:
    """miStudio's rows for the demo's trainings: the second oldest step of the completed one
    is its best; the other is running."""
    with fresh_pg_db() as url:
        db = MiDB(url)
        db.script(SCHEMA)
        done = steps_of(demo, DONE)
        losses = {s: 1.0 / (i + 2) for i, s in enumerate(done)}
        losses[done[1]] = 0.01  # best, far from the newest
        db.add_training(DONE, "completed", losses, layers=(7, 14, 18), hook=None)
        live = steps_of(demo, LIVE)
        falling = {s: 1.0 - 0.1 * i for i, s in enumerate(live)}  # the newest is best
        db.add_training(LIVE, "running", falling, layers=(7, 14, 18), hook=None)
        yield db


def details(app: object) -> str:
    return str(app.query_one(DetailsPanel).render())  # type: ignore[attr-defined]


async def test_details_show_status_best_loss_and_protection(demo: DemoTree, mi: MiDB) -> None:
    best = steps_of(demo, DONE)[1]
    svc = await CheckpointService.open(str(demo.db_path), mistudio=mi.url)
    try:
        await svc.scan(str(demo.root))
        app = make_app(demo, svc)
        async with app.run_test(size=SIZE) as pilot:
            await settle(app, pilot)
            await goto(app, pilot, DONE)
            assert "miStudio  completed" in details(app)
            await goto(app, pilot, LIVE)
            assert "miStudio  running" in details(app)
            await pilot.press("right")
            await settle(app, pilot)
            await pilot.press("down")
            await settle(app, pilot)
            text = details(app)
            assert "⊘ active training: running" in text and "miStudio  3 rows, loss 1," in text
            await goto(app, pilot, DONE)
            await pilot.press("right")
            await settle(app, pilot)
            await goto(app, pilot, f"checkpoint_{best}")
            text = details(app)
            assert "miStudio  3 rows, best, loss 0.01" in text
            assert "⊘ best in miStudio" in text
            await pilot.press("down")
            await settle(app, pilot)
            text = details(app)
            assert "best in miStudio" not in text and "miStudio  3 rows, loss 0.25" in text
    finally:
        await svc.close()


def test_the_browser_entry_point_takes_mistudio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ckpt-tui --mistudio URL ROOT`` hands the URL to the service the app opens."""
    from click.testing import CliRunner

    import ckpt_tui.tui
    from ckpt_tui.cli import main

    seen: list[tuple[str, str | None]] = []

    def run_tui(root: str, db: str | None, **_kw: object) -> int:
        seen.append((root, CheckpointService.default_mistudio))
        return 0

    monkeypatch.setattr(ckpt_tui.tui, "run_tui", run_tui)
    url = "postgresql://mistudio@db:5432/mistudio"
    result = CliRunner().invoke(main, ["--mistudio", url, str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert seen == [(str(tmp_path), url)]
    assert CheckpointService.default_mistudio is None, "reset when the browser exits"
