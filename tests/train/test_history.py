"""The training history's writes on a real DuckDB file, when a Ctrl-C lands in the middle of one."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.interrupts import CtrlCAsBeginReturns
from train.history import HistoryRow, ModelHistory


def _rows(first: int, last: int) -> list[HistoryRow]:
    now = datetime.now(timezone.utc)
    return [HistoryRow(i, now, 100.0, 0.5, 0.6, "rw", 5e-5, 1) for i in range(first, last + 1)]


def test_a_write_a_ctrl_c_stopped_is_rolled_back_and_later_writes_are_kept(tmp_path):
    with ModelHistory(tmp_path) as history:
        history.append(_rows(1, 2))
        real = history.connection
        history._connection = CtrlCAsBeginReturns(real)
        with pytest.raises(KeyboardInterrupt):
            history.append(_rows(3, 4))  # stopped as it began: none of its rows land
        assert history._connection.fired
        history._connection = real
        history.log_event(2, "checkpoint", "step-00000002")  # what the loop writes on its way out
        history.append(_rows(3, 3))
    with ModelHistory(tmp_path, read_only=True) as history:
        iterations, _, _ = history.losses()
        events = history.events("checkpoint")
    assert list(iterations) == [1, 2, 3]
    assert [(iteration, detail) for iteration, _, detail in events] == [(2, "step-00000002")]
