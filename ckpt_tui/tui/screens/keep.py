"""Keep dialog: newest N plus optional rules (every K, best by a metadata key, newer than);
preview which steps would be marked, their size and why each kept step is kept; then mark."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from rich.cells import cell_len
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import Button, Checkbox, Input, Static

from ckpt_tui.errors import CkptError
from ckpt_tui.retention import Rules, parse_best, parse_duration
from ckpt_tui.tui import format as fmt
from ckpt_tui.tui.screens.dialog import Dialog
from ckpt_tui.tui.widgets.hanging import HangingText
from ckpt_tui.tui.widgets.tick import Tick
from ckpt_tui.types import Plan

DEFAULT_KEEP = 3
PREVIEW_STEPS = 6
PREVIEW_KEPT = 6

PreviewFn = Callable[[Rules, bool], Awaitable[Plan]]


def _step_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


class KeepNewestScreen(Dialog[Plan | None]):
    """Returns the previewed retention plan to mark, or None when cancelled.

    Enter in a field marks; Space or Enter on the checkbox only ticks it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="keep.cancel"),
    ]

    def __init__(self, training: str | None, preview: PreviewFn, units: fmt.Units) -> None:
        super().__init__()
        self.training = training
        self.preview_fn = preview
        self.units = units
        self.plan: Plan | None = None
        self._plan_key: tuple[Rules, bool] | None = None
        self._accept_when_ready = False

    def compose(self) -> ComposeResult:
        with Vertical(id="keep-box", classes="dialog"):
            yield Static(
                self._title(self.training is None), id="keep-title", classes="dialog-title"
            )
            with VerticalScroll(classes="dialog-body", id="keep-body"):
                with Horizontal(classes="keep-rule"):
                    yield Static("keep newest N", classes="keep-rule-label")
                    yield Input(str(DEFAULT_KEEP), type="integer", id="keep-n")
                    yield Tick(
                        "all trainings",
                        value=self.training is None,
                        disabled=self.training is None,
                        id="keep-all",
                    )
                with Horizontal(classes="keep-rule"):
                    yield Static("also every", classes="keep-rule-label")
                    yield Input("", placeholder="K steps", type="integer", id="keep-every")
                with Horizontal(classes="keep-rule"):
                    yield Static("best by", classes="keep-rule-label")
                    yield Input("", placeholder="avg_loss[:min|max]", id="keep-best")
                with Horizontal(classes="keep-rule"):
                    yield Static("newer than", classes="keep-rule-label")
                    yield Input("", placeholder="24h, 7d", id="keep-newer")
                yield HangingText("", id="keep-preview")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel (Esc)", id="keep-cancel", compact=True)
                yield Button("Mark (Enter)", id="keep-mark", variant="warning", compact=True)

    def _title(self, everything: bool) -> Content:
        scope = "all trainings" if everything or not self.training else self.training
        return Content.assemble(
            ("Keep newest N", "bold $accent"),
            f" of {scope} (plus the rules below); mark the rest",
        )

    def on_mount(self) -> None:
        self.query_one("#keep-n", Input).focus()
        self._refresh_preview()

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        self.query_one("#keep-title", Static).update(self._title(self._everything()))
        self._refresh_preview()

    def _everything(self) -> bool:
        return self.query_one("#keep-all", Tick).value

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
            self.query_one("#keep-preview", HangingText).update(Content.styled(rules, "$error"))
            return
        self._preview(rules, self._everything())

    @work(group="keep-preview", exclusive=True)
    async def _preview(self, rules: Rules, everything: bool) -> None:
        try:
            plan = await self.preview_fn(rules, everything)
        except CkptError as err:
            self.query_one("#keep-preview", HangingText).update(Content.styled(str(err), "$error"))
            return
        self.plan, self._plan_key = plan, (rules, everything)
        self.query_one("#keep-preview", HangingText).update(self._describe(plan))
        if self._accept_when_ready:
            self._accept()

    def _describe(self, plan: Plan) -> Content:
        size = self.units.size(self.units.pick(plan.bytes, plan.disk_bytes))
        lines = [
            Content.assemble(
                "would mark ",
                (fmt.count(len(plan.steps), "step"), "bold"),
                f" ({fmt.count(plan.file_count, 'file')}) · ",
                (size, "bold $success"),
                f" · keeps {fmt.count(len(plan.keep), 'step')}",
            )
        ]
        shown = plan.steps[:PREVIEW_STEPS]
        names = [f"{s.training}/{_step_name(s.path)}" for s in shown]
        name_w = max((cell_len(n) for n in names), default=0)
        for s, name in zip(shown, names, strict=True):
            step_size = self.units.size(self.units.pick(s.size_bytes, s.disk_bytes))
            lines.append(Content(f"  {fmt.pad(name, name_w)}  {step_size:>10}"))
        if len(plan.steps) > PREVIEW_STEPS:
            lines.append(
                Content.styled(f"  … and {len(plan.steps) - PREVIEW_STEPS:,} more", "$text-muted")
            )
        # kept steps with the most interesting reasons first (rules beyond "newest"); the
        # count above is the number of these lines plus the "… and N more kept" below
        kept = sorted(plan.keep, key=lambda k: (k.reasons == ("newest",), k.training, k.step))
        for k in kept[:PREVIEW_KEPT]:
            lines.append(
                Content.styled(
                    f"  keep {k.training}/{_step_name(k.path)}: {', '.join(k.reasons)}",
                    "$text-muted",
                )
            )
        if len(kept) > PREVIEW_KEPT:
            lines.append(
                Content.styled(f"  … and {len(kept) - PREVIEW_KEPT:,} more kept", "$text-muted")
            )
        return Content("\n").join(lines)

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
        key = (rules, self._everything())
        if self.plan is not None and self._plan_key == key:
            self.dismiss(self.plan)
        else:
            self._accept_when_ready = not isinstance(rules, str)

    def action_cancel(self) -> None:
        self.dismiss(None)
