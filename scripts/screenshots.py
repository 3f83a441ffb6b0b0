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
from ckpt_tui.tui.app import CkptApp

SIZE = (120, 36)
DISPLAY_ROOT = "/data/sae/trainings"
UNLINK_DELAY = 0.25  # seconds per unlink, so the deletion is caught in progress


async def settle(app: CkptApp, pilot: Any) -> None:
    for _ in range(3):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause()


async def shoot(out: Path) -> list[Path]:
    demo = build_demo(Path(tempfile.mkdtemp(prefix="ckpt-tui-shots-")), scale=0.1)
    async with await CheckpointService.open(str(demo.db_path)) as svc:
        await svc.scan(str(demo.root))
    app = CkptApp(str(demo.root), str(demo.db_path), display_root=DISPLAY_ROOT)
    saved: list[Path] = []

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
            await asyncio.sleep(UNLINK_DELAY * 5)
            await pilot.pause()
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
