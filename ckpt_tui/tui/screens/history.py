"""The deletion history (H): runs newest first; the highlighted run's steps below."""

from __future__ import annotations

import time
from typing import ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ckpt_tui.history import RunRecord
from ckpt_tui.service import CheckpointService
from ckpt_tui.tui.format import Units
from ckpt_tui.tui.screens.dialog import Dialog
from ckpt_tui.tui.widgets.hanging import HangingText


def when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def run_line(r: RunRecord, units: Units) -> str:
    deleted = sum(1 for s in r.steps if s.result in ("deleted", "partly deleted"))
    outcome = (
        f"interrupted → run {r.finished_by}"
        if r.outcome == "interrupted" and r.finished_by is not None
        else r.outcome
    )
    freed = units.size(units.pick(r.freed_bytes, r.freed_disk_bytes))
    return (
        f"{when(r.started_at)}  {r.user}@{r.host}  {r.face}  {deleted} steps · {freed}  {outcome}"
    )


def steps_text(r: RunRecord, units: Units) -> Content:
    planned = units.size(units.pick(r.planned_bytes, r.planned_disk_bytes))
    freed = units.size(units.pick(r.freed_bytes, r.freed_disk_bytes))
    lines = [
        Content.styled(f"run {r.id}: {r.command or r.face}", "bold"),
        Content.styled(
            f"planned {r.planned_files:,} files · {planned}   "
            f"freed {r.freed_files:,} files · {freed}",
            "$text-muted",
        ),
    ]
    for s in r.steps:
        style = (
            "$error"
            if s.errors
            else "$warning"
            if s.result.startswith(("kept", "protected", "skipped"))
            else ""
        )
        lines.append(
            Content.assemble(
                f"{s.path}  ",
                (s.result, style),
                (
                    f"  {s.files_deleted}/{s.files_planned} files · "
                    f"{units.size(units.pick(s.freed_bytes, s.freed_disk_bytes))}",
                    "$text-muted",
                ),
            )
        )
        lines += [
            Content.styled(f"    {e.get('path')}: {e.get('error')}", "$error") for e in s.errors
        ]
    if not r.steps:
        lines.append(Content.styled("no steps recorded", "$text-muted"))
    return Content("\n").join(lines)


class HistoryScreen(Dialog[None]):
    """Runs under the root, newest first; ↑↓ pick a run, its steps show below; Esc closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,H", "close", "Close", id="history.close"),
    ]

    def __init__(self, service: CheckpointService, root: str, units: Units) -> None:
        super().__init__()
        self.service = service
        self.root = root
        self.units = units
        self.runs: list[RunRecord] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="history-box", classes="dialog"):
            yield Static(
                Content.assemble(
                    ("Deletion history", "bold $accent"),
                    ("   ↑↓ pick a run · PgUp PgDn scroll its steps · Esc closes", "$text-muted"),
                ),
                classes="dialog-title",
            )
            yield OptionList(id="history-runs")
            with VerticalScroll(classes="dialog-body", id="history-body"):
                yield HangingText(Content.styled("loading…", "$text-muted"), id="history-steps")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()
        self.load()

    @work(group="history", exclusive=True)
    async def load(self) -> None:
        self.runs = await self.service.history(self.root)
        runs = self.query_one(OptionList)
        runs.clear_options()
        runs.add_options([Option(run_line(r, self.units), id=str(r.id)) for r in self.runs])
        runs.display = bool(self.runs)  # an empty list would be an empty box
        if self.runs:
            runs.highlighted = 0
        else:
            self.query_one("#history-steps", HangingText).update(
                Content.styled("no deletions recorded under this root yet", "$text-muted")
            )

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        i = event.option_index
        if 0 <= i < len(self.runs):
            self.query_one("#history-steps", HangingText).update(
                steps_text(self.runs[i], self.units)
            )

    def action_scroll(self, how: str) -> None:
        if how in ("up", "down"):  # arrows move between runs; pages scroll the steps
            runs = self.query_one(OptionList)
            runs.action_cursor_up() if how == "up" else runs.action_cursor_down()
            return
        super().action_scroll(how)

    def action_close(self) -> None:
        self.dismiss(None)
