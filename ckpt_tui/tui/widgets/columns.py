"""Which columns a tree row shows at a given width: names first, then size, counts, age, bar.

Pure arithmetic on cell counts, so it is tested without an app. Columns drop in the order
bar, age, counts before any name is cut; a name is cut only when even size alone leaves it
too little room.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX_W = 4  # " ", mark glyph, guard glyph (pinned / protected), " "
SIZE_W = 10  # "1023.9 MiB"
BAR_W = 10
BAR_MAX_W = 24  # spare width on a wide screen grows the bar up to this
COUNT_W = 11  # "1,234 steps", "4 trainings"
AGE_W = 4  # "12mo", "59m", "3d"
NAME_MIN_W = 12  # a name column never shrinks below this while columns remain to drop
NAME_SLACK = 2  # room left after the longest name before the columns start
NAME_PREF_W = 40  # on a wide screen the columns start here, so they do not jump on expand


@dataclass(frozen=True, slots=True)
class Columns:
    """Widths in cells; 0 means the column is not shown."""

    name: int  # indent + arrow + name + short flag
    size: int
    bar: int
    count: int
    age: int

    @property
    def right(self) -> int:
        """Cells used by the shown columns, one separating space each."""
        return sum(w + 1 for w in (self.size, self.bar, self.count, self.age) if w)


def plan_columns(width: int, need: int) -> Columns:
    """Columns for a tree ``width`` cells wide whose longest row needs ``need`` name cells.

    The first layout (all columns, then without the bar, the age, the counts) that leaves
    the name column ``need`` cells wins; when none does, only the size stays and names are
    cut to what is left.
    """
    avail = max(0, width - PREFIX_W)
    layouts = (
        (SIZE_W, BAR_W, COUNT_W, AGE_W),
        (SIZE_W, 0, COUNT_W, AGE_W),
        (SIZE_W, 0, COUNT_W, 0),
        (SIZE_W, 0, 0, 0),
    )
    for size, bar, count, age in layouts:
        right = sum(w + 1 for w in (size, bar, count, age) if w)
        room = avail - right
        if room >= max(need, 1):
            name = min(room, max(need + NAME_SLACK, NAME_PREF_W))
            if bar:  # a wide screen: the spare cells go to the bar, the rest stays blank
                bar = min(BAR_MAX_W, bar + room - name)
            return Columns(name, size, bar, count, age)
    size = SIZE_W if avail - (SIZE_W + 1) >= NAME_MIN_W else 0
    return Columns(max(0, avail - (size + 1 if size else 0)), size, 0, 0, 0)
