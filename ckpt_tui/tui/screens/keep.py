"""Keep newest N: ask for N, preview which steps would be marked and their size, then mark."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Static

from ckpt_tui.errors import CkptError
from ckpt_tui.tui import format as fmt
from ckpt_tui.types import Plan

DEFAULT_KEEP = 3
PREVIEW_STEPS = 8

PreviewFn = Callable[[int, bool], Awaitable[Plan]]


class KeepNewestScreen(ModalScreen[Plan | None]):
    """Returns the previewed retention plan to mark, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="keep.cancel"),
    ]

    def __init__(self, training: str | None, preview: PreviewFn) -> None:
        super().__init__()
        self.training = training
        self.preview_fn = preview
        self.plan: Plan | None = None
        self._plan_key: tuple[int, bool] | None = None
        self._accept_when_ready = False

    def compose(self) -> ComposeResult:
        scope = f"training {self.training}" if self.training else "all trainings"
        with Vertical(id="keep-box", classes="dialog"):
            yield Static(
                Content.assemble(
                    ("Keep the newest N steps", "bold $accent"), f" of {scope}; mark the rest"
                ),
                id="keep-title",
            )
            with Horizontal(id="keep-row"):
                yield Static("N =", id="keep-label")
                yield Input(str(DEFAULT_KEEP), type="integer", id="keep-n")
                yield Checkbox("all trainings", value=self.training is None, id="keep-all")
            yield Static("", id="keep-preview")
            with Horizontal(id="keep-buttons"):
                yield Button("Cancel", id="keep-cancel")
                yield Button("Mark (Enter)", id="keep-mark", variant="warning")

    def on_mount(self) -> None:
        self.query_one("#keep-n", Input).focus()
        self._refresh_preview()

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        self._refresh_preview()

    def _n(self) -> int | None:
        try:
            n = int(self.query_one("#keep-n", Input).value)
        except ValueError:
            return None
        return n if n >= 1 else None

    def _refresh_preview(self) -> None:
        n = self._n()
        if n is None:
            self.plan = None
            self.query_one("#keep-preview", Static).update(
                Content.styled("N must be a whole number ≥ 1", "$error")
            )
            return
        self._preview(n, self.query_one("#keep-all", Checkbox).value)

    @work(group="keep-preview", exclusive=True)
    async def _preview(self, n: int, everything: bool) -> None:
        try:
            plan = await self.preview_fn(n, everything)
        except CkptError as err:
            self.query_one("#keep-preview", Static).update(Content.styled(str(err), "$error"))
            return
        self.plan, self._plan_key = plan, (n, everything)
        lines = [
            Content.assemble(
                "would mark ",
                (fmt.count(len(plan.steps), "step"), "bold"),
                f" ({fmt.count(plan.file_count, 'file')}) · ",
                (fmt.size(plan.bytes), "bold $success"),
                f" · keeps {fmt.count(len(plan.keep), 'step')}",
            )
        ]
        for s in plan.steps[:PREVIEW_STEPS]:
            lines.append(
                Content(f"  {s.training}/{s.path.rsplit('/', 1)[-1]}  {fmt.size(s.size_bytes)}")
            )
        if len(plan.steps) > PREVIEW_STEPS:
            lines.append(
                Content.styled(f"  … and {len(plan.steps) - PREVIEW_STEPS:,} more", "$text-muted")
            )
        self.query_one("#keep-preview", Static).update(Content("\n").join(lines))
        if self._accept_when_ready:
            self._accept()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._accept()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "keep-mark":
            self._accept()
        else:
            self.dismiss(None)

    def _accept(self) -> None:
        key = (self._n(), self.query_one("#keep-all", Checkbox).value)
        if self.plan is not None and self._plan_key == key:
            self.dismiss(self.plan)
        else:
            self._accept_when_ready = key[0] is not None

    def action_cancel(self) -> None:
        self.dismiss(None)
