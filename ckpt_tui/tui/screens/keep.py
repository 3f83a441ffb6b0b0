"""Keep dialog: newest N plus optional rules (every K, best by a metadata key, newer than);
preview which steps would be marked, their size and why each kept step is kept; then mark."""

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
from ckpt_tui.retention import Rules, parse_best, parse_duration
from ckpt_tui.tui import format as fmt
from ckpt_tui.types import Plan

DEFAULT_KEEP = 3
PREVIEW_STEPS = 6
PREVIEW_KEPT = 4

PreviewFn = Callable[[Rules, bool], Awaitable[Plan]]


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
        self._plan_key: tuple[Rules, bool] | None = None
        self._accept_when_ready = False

    def compose(self) -> ComposeResult:
        scope = f"training {self.training}" if self.training else "all trainings"
        with Vertical(id="keep-box", classes="dialog"):
            yield Static(
                Content.assemble(
                    ("Keep the newest N steps", "bold $accent"),
                    f" of {scope}, and what the rules below add; mark the rest",
                ),
                id="keep-title",
            )
            with Horizontal(id="keep-row"):
                yield Static("N =", id="keep-label")
                yield Input(str(DEFAULT_KEEP), type="integer", id="keep-n")
                yield Checkbox("all trainings", value=self.training is None, id="keep-all")
            with Horizontal(classes="keep-rule"):
                yield Static("also keep every", classes="keep-rule-label")
                yield Input("", placeholder="K steps", type="integer", id="keep-every")
            with Horizontal(classes="keep-rule"):
                yield Static("best by", classes="keep-rule-label")
                yield Input("", placeholder="avg_loss[:min|max]", id="keep-best")
            with Horizontal(classes="keep-rule"):
                yield Static("newer than", classes="keep-rule-label")
                yield Input("", placeholder="24h, 7d", id="keep-newer")
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

    def _rules(self) -> Rules | str:
        """The rules the inputs describe, or what is wrong with them."""

        def value(name: str) -> str:
            return self.query_one(f"#{name}", Input).value.strip()

        try:
            n = int(value("keep-n"))
        except ValueError:
            return "N must be a whole number ≥ 1"
        try:
            every = int(value("keep-every")) if value("keep-every") else None
            best = parse_best(value("keep-best")) if value("keep-best") else None
            newer = value("keep-newer")
            return Rules(
                keep=n,
                every=every,
                best=best,
                newer_than_s=parse_duration(newer) if newer else None,
                newer_than_label=newer,
            )
        except ValueError as err:
            return str(err)

    def _refresh_preview(self) -> None:
        rules = self._rules()
        if isinstance(rules, str):
            self.plan = None
            self.query_one("#keep-preview", Static).update(Content.styled(rules, "$error"))
            return
        self._preview(rules, self.query_one("#keep-all", Checkbox).value)

    @work(group="keep-preview", exclusive=True)
    async def _preview(self, rules: Rules, everything: bool) -> None:
        try:
            plan = await self.preview_fn(rules, everything)
        except CkptError as err:
            self.query_one("#keep-preview", Static).update(Content.styled(str(err), "$error"))
            return
        self.plan, self._plan_key = plan, (rules, everything)
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
        # kept steps with the most interesting reasons first (rules beyond "newest")
        kept = sorted(plan.keep, key=lambda k: (k.reasons == ("newest",), k.training, k.step))
        for k in kept[:PREVIEW_KEPT]:
            lines.append(
                Content.styled(
                    f"  keep {k.training}/{k.path.rsplit('/', 1)[-1]}: {', '.join(k.reasons)}",
                    "$text-muted",
                )
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
        rules = self._rules()
        key = (rules, self.query_one("#keep-all", Checkbox).value)
        if self.plan is not None and self._plan_key == key:
            self.dismiss(self.plan)
        else:
            self._accept_when_ready = not isinstance(rules, str)

    def action_cancel(self) -> None:
        self.dismiss(None)
