"""Drive the real app headlessly on the demo tree and save SVG screenshots into screenshots/.

    python scripts/screenshots.py [--out screenshots]

The deletion shot is a real deletion, slowed down by a sleeping ``os.unlink`` so it can be
caught half-way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ckpt_tui.demo import build_demo
from ckpt_tui.service import CheckpointService
from ckpt_tui.tui.app import FLUSH_SECONDS, CkptApp

SIZE = (120, 36)
SMALL = (80, 24)
DISPLAY_ROOT = "/data/sae/trainings"
UNLINK_DELAY = 0.25  # seconds per unlink, so the deletion is caught in progress


async def settle(app: CkptApp, pilot: Any) -> None:
    """Until no worker is pending or running across two message rounds."""
    quiet = 0
    while quiet < 2:
        await pilot.pause()
        if any(w.is_running or w.state.name == "PENDING" for w in app.workers):
            quiet = 0
            await app.workers.wait_for_complete()
        else:
            quiet += 1


async def until(pilot: Any, condition: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not reach the state to shoot")
        await pilot.pause(0.02)
    await pilot.pause()


async def shoot_small(demo_root: str, db: str, out: Path) -> Path:
    """The browser at 80x24, a training open: names whole, columns dropped instead."""
    app = CkptApp(demo_root, db, display_root=DISPLAY_ROOT)
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        await pilot.press("down", "down", "right")  # train_36766f85
        await settle(app, pilot)
        await pilot.press("down", "space", "space", "down")
        await settle(app, pilot)
        return Path(app.save_screenshot(filename="00-80x24.svg", path=str(out)))


async def shoot(out: Path) -> list[Path]:
    demo = build_demo(Path(tempfile.mkdtemp(prefix="ckpt-tui-shots-")), scale=0.1)
    async with await CheckpointService.open(str(demo.db_path)) as svc:
        await svc.scan(str(demo.root))
    saved: list[Path] = [await shoot_small(str(demo.root), str(demo.db_path), out)]
    app = CkptApp(str(demo.root), str(demo.db_path), display_root=DISPLAY_ROOT)

    def save(name: str) -> None:
        saved.append(Path(app.save_screenshot(filename=f"{name}.svg", path=str(out))))

    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        save("01-main")
        await pilot.press("down", "down", "right")  # train_36766f85
        await settle(app, pilot)
        await pilot.press("down", "space", "space", "space", "down", "space")
        await pilot.press("down", "down", "right", "down")  # a layer file: its header
        await settle(app, pilot)
        save("02-expanded-with-marks")
        await pilot.press("d")
        await settle(app, pilot)
        save("03-confirm")
        real_unlink = os.unlink

        def slow_unlink(*args: Any, **kwargs: Any) -> None:
            time.sleep(UNLINK_DELAY)
            real_unlink(*args, **kwargs)

        os.unlink = slow_unlink  # type: ignore[assignment]
        try:
            await pilot.press("y")
            await until(  # caught half-way: some files and one step directory already gone
                pilot,
                lambda: (
                    app.deletion is not None
                    and app.deletion.progress is not None
                    and app.deletion.progress.files_done >= 4
                ),
            )
            await pilot.pause(FLUSH_SECONDS * 2)  # the next progress flush is on screen
            save("04-deleting")
            await settle(app, pilot)
            save("05-after-delete")
        finally:
            os.unlink = real_unlink
        await pilot.press("question_mark")
        await settle(app, pilot)
        save("06-help")
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.press("home", "down", "down", "down", "K")  # keep dialog: train_36766f85
        await settle(app, pilot)
        await pilot.press("backspace", "2", "tab", "tab", *"10000", "tab", *"avg_loss:min")
        await settle(app, pilot)
        save("07-keep-rules")
    return saved


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "screenshots"
    )
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(a.out)):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
