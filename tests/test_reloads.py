"""Overlapping reloads of a directory: the one started last wins, whatever order they end in."""

from quanyi.core.reloads import Reloads


def test_a_reload_started_before_another_cannot_undo_it() -> None:
    reloads = Reloads()
    periodic = reloads.start()  # read the rows before a staff change committed
    after_change = reloads.start()  # the change's own reload, reading the new rows
    assert reloads.may_apply(after_change)
    assert not reloads.may_apply(periodic)  # it ended last, with the old rows


def test_reloads_ending_in_order_all_apply() -> None:
    reloads = Reloads()
    first = reloads.start()
    assert reloads.may_apply(first)
    second = reloads.start()
    assert reloads.may_apply(second)
