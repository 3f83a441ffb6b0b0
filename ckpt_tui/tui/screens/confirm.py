"""Confirm a deletion. The dialog owns its plan: it plans the marked files in a worker, shows
what will go per step (and what stays, and why), re-plans when a box is ticked, and returns
the plan the user agreed to through ``dismiss`` (None when cancelled).

When the marked steps are those of an interrupted deletion (a crash between its claim and
its unlinks), nothing can be planned for them; the dialog then offers to finish that
deletion and returns the (empty) plan to say so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Button, Checkbox, Static

from ckpt_tui.errors import CkptError
from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.screens import plan_text
from ckpt_tui.tui.screens.dialog import Dialog
from ckpt_tui.tui.widgets.hanging import HangingText
from ckpt_tui.tui.widgets.tick import Tick
from ckpt_tui.types import DiskUsage, Interrupted, Plan

if TYPE_CHECKING:
    from ckpt_tui.service import CheckpointService


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """What the user asked for, with the marks' figures to show while the plan is checked."""

    root_id: int
    file_ids: frozenset[int]
    steps: int
    bytes: int
    disk_bytes: int
    hidden: tuple[str, ...] = ()  # marked steps the active filter hides
    rel: Callable[[str], str] = str  # a path for display, relative to the root
    step_paths: Mapping[int, str] = field(default_factory=dict)  # step id -> its folder


class ConfirmScreen(Dialog[Plan | None]):
    """y deletes what the checked plan lists; n or Escape cancels; focus starts on Cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "choose(True)", "Delete", id="confirm.yes"),
        Binding("n,escape", "choose(False)", "Cancel", id="confirm.no"),
        Binding("a", "apparent", "Apparent/disk", show=False, id="confirm.apparent"),
    ]

    def __init__(
        self,
        service: CheckpointService,
        request: DeleteRequest,
        units: fmt.Units,
        disk: Callable[[], DiskUsage | None],
    ) -> None:
        super().__init__()
        self.service = service
        self.request = request
        self.units = units
        self._disk_fn = disk
        self.plan: Plan | None = None
        self.free: int | None = None
        self.pending = True  # the figures are the marks' until the plan is checked
        self.interrupted: Interrupted | None = None  # marked steps it claimed: y finishes it

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box", classes="dialog"):
            yield Static(self._title(), id="confirm-title", classes="dialog-title")
            with VerticalScroll(classes="dialog-body", id="confirm-body"):
                yield HangingText(self._pending_text(), id="confirm-text")
            with Vertical(classes="dialog-footer"):
                yield Tick("include protected steps", id="confirm-force")
                yield Tick("also delete the foreign files", id="confirm-foreign")
                yield HangingText(id="confirm-note", classes="dialog-note")
                with Horizontal(classes="dialog-buttons"):
                    yield Button("Cancel (n)", id="cancel", variant="primary", compact=True)
                    yield Button(
                        "Delete (y)", id="confirm", variant="error", compact=True, disabled=True
                    )

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()
        for box in self.query(Tick):
            box.display = False
        self.say("")
        self._load()

    def say(self, text: str, style: str = "$text-muted") -> None:
        """A word about the last key, inside the dialog above its buttons (a toast would
        cover the dialog at 80x24; the dialog hides them)."""
        note = self.query_one("#confirm-note", HangingText)
        note.update(Content.styled(text, style))
        note.display = bool(text)

    @property
    def force(self) -> bool:
        return self.query_one("#confirm-force", Tick).value

    @property
    def include_foreign(self) -> bool:
        return self.query_one("#confirm-foreign", Tick).value

    # the plan ---------------------------------------------------------------------------

    @work(group="confirm-plan", exclusive=True)
    async def _load(self) -> None:
        self.pending = True
        self.query_one("#confirm", Button).disabled = True
        req = self.request
        try:
            plan = await self.service.plan_files(
                req.root_id, req.file_ids, force=self.force, include_foreign=self.include_foreign
            )
        except CkptError as err:
            self.query_one("#confirm-text", HangingText).update(
                Content.styled(f"Cannot plan the deletion: {err}", "bold $error")
            )
            self.plan, self.pending = None, False
            return
        try:  # fresh, not the last poll: the dialog promises free space after
            usage = await asyncio.to_thread(self._disk_fn)
        except OSError:
            usage = None
        self.interrupted = await self._interrupted_here() if plan.empty else None
        self.plan, self.free = plan, usage.free if usage is not None else None
        self.pending = False
        self.say("")
        self._show(plan)

    async def _interrupted_here(self) -> Interrupted | None:
        """The interrupted deletion that holds some of the marked steps, if one does (and no
        other ckpt-tui is still running it)."""
        pending = await self.service.interrupted()
        if pending is None or pending.running:
            return None
        req = self.request
        marked = {req.rel(p).rstrip("/") for p in req.step_paths.values()}
        return pending if marked & {s.rstrip("/") for s in pending.first_steps} else None

    def _show(self, plan: Plan) -> None:
        req = self.request
        text = plan_text.describe(plan, self.units, req.rel, self.free, req.hidden, req.step_paths)
        self.query_one("#confirm-title", Static).update(self._title(plan))
        self.query_one("#confirm-text", HangingText).update(text)
        force = self.query_one("#confirm-force", Tick)
        forcable = plan_text.forcable(plan)
        force.display = bool(forcable) or force.value
        force.label = (
            f"include {fmt.count(len(forcable), 'protected step')}"
            if forcable
            else "include protected steps"
        )
        foreign = self.query_one("#confirm-foreign", Tick)
        foreign.display = bool(plan.foreign) or foreign.value
        if plan.foreign:
            foreign.label = f"also delete these {fmt.count(len(plan.foreign), 'foreign file')}"
        button = self.query_one("#confirm", Button)
        button.disabled = plan.empty and self.interrupted is None
        button.label = "Finish it (y)" if plan.empty and self.interrupted else "Delete (y)"
        if plan.empty and self.interrupted is not None:
            i = self.interrupted
            self.say(
                f"These steps belong to a deletion that stopped before it finished "
                f"({fmt.count(i.files, 'file')} in {fmt.count(i.steps, 'step')}): y finishes "
                "it now (what it claimed and nothing else), n leaves it.",
                "$warning",
            )

    @on(Checkbox.Changed)
    def _ticked(self) -> None:
        self.query_one("#confirm-text", HangingText).update(self._pending_text())
        self._load()

    # text -------------------------------------------------------------------------------

    def _title(self, plan: Plan | None = None) -> Content:
        if plan is None:
            what = fmt.count(self.request.steps, "step")
        elif plan.empty and self.interrupted is not None:
            return Content.styled("Finish the interrupted deletion?", "bold $warning")
        elif plan.empty:
            return Content.styled("Nothing can be deleted", "bold $warning")
        else:
            what = f"{fmt.count(len(plan.steps), 'step')} ({fmt.count(plan.file_count, 'file')})"
        return Content.styled(f"Delete {what}?", "bold $error")

    def _pending_text(self) -> Content:
        req, units = self.request, self.units
        size = units.size(units.pick(req.bytes, req.disk_bytes))
        where = "apparent" if units.apparent else "on disk"
        lines = [
            Content.assemble(
                "frees about ",
                (size, "bold"),
                f" {where} (marked; checking each file against the index and live-writer "
                "protection…)",
            )
        ]
        if self.request.hidden:
            lines.append(plan_text.hidden_line(self.request.hidden))
        return Content("\n").join(lines)

    async def action_apparent(self) -> None:
        """a switches sizes here as in the browser (the same setting): the steps' sizes."""
        await self.app.run_action("apparent")
        if self.plan is not None and not self.pending:
            self._show(self.plan)
        else:
            self.query_one("#confirm-text", HangingText).update(self._pending_text())

    # answers ----------------------------------------------------------------------------

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id in ("confirm", "cancel"):
            self.action_choose(event.button.id == "confirm")

    def action_choose(self, yes: bool) -> None:
        if not yes:
            self.dismiss(None)
        elif self.pending:
            self.say("Still checking the plan: y works once the figures above are final.")
        elif self.plan is None:
            self.say("Nothing was planned, so nothing can be deleted: n or Esc closes.", "$error")
        elif self.plan.empty and self.interrupted is not None:
            self.dismiss(self.plan)  # empty: finish the interrupted deletion (see the module)
        elif self.plan.empty:
            tick = " tick “include …” above to delete them, or" if self.plan.protected else ""
            self.say(f"Nothing in this plan can be deleted:{tick} n or Esc closes.", "$warning")
        else:
            self.dismiss(self.plan)
