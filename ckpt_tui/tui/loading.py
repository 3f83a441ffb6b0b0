"""Fill the model and the marks from the service. Textual-free: plain coroutines.

Steps are loaded only when a training is expanded (or when a whole training is marked or
filtered: then in one query for all of them). Loading steps also tells the marks which steps
a training's mark skips (pinned or protected).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ckpt_tui.tui.marks import Marks
from ckpt_tui.tui.model import Kind, Node, TreeModel, guard_reason
from ckpt_tui.types import StepInfo

if TYPE_CHECKING:
    from ckpt_tui.service import CheckpointService


class Loader:
    """Queries for the rows the model shows, in as few round trips as the view allows."""

    def __init__(self, model: TreeModel, marks: Marks) -> None:
        self.model = model
        self.marks = marks
        self.map_loaded = False  # the file map behind marks has been read at least once

    def set_steps(self, training: Node, infos: Iterable[StepInfo]) -> None:
        infos = list(infos)
        self.model.set_steps(training, infos)
        for info in infos:
            self.marks.guard(info.id, guard_reason(info))

    async def reload(self, svc: CheckpointService, root_id: int) -> None:
        """Re-query trainings and every loaded level, then the file map; keep marks."""
        model = self.model
        trainings = await svc.trainings(root_id)
        loaded = {t.id for t in model.trainings if t.children is not None}
        model.set_trainings(trainings)  # rows on screen first: the map can take a while
        expanded = [t for t in model.trainings if t.id in loaded]
        if expanded:
            found = await svc.steps_of(t.id for t in expanded)
            for t in expanded:
                self.set_steps(t, found.get(t.id, []))
                for s in t.children or ():
                    if s.children is not None:
                        model.set_files(s, await svc.files(s.id))
            model.resort()
        # The file map (every file's id and size, for marks) comes after the rows are on
        # screen: with 100k files it is most of the start-up time. Marking waits for it.
        self.marks.load(await svc.file_map(root_id))
        self.map_loaded = True

    async def ensure_steps(self, svc: CheckpointService, trainings: Iterable[Node]) -> None:
        """Load the steps of trainings not loaded yet, all in one query."""
        todo = [t for t in trainings if t.children is None]
        if todo:
            found = await svc.steps_of(t.id for t in todo)
            for t in todo:
                if t.children is None:
                    self.set_steps(t, found.get(t.id, []))

    async def load_children(self, svc: CheckpointService, node: Node) -> None:
        if node.kind == Kind.TRAINING:
            await self.ensure_steps(svc, [node])
        elif node.kind == Kind.STEP and node.children is None:
            self.model.set_files(node, await svc.files(node.id))
