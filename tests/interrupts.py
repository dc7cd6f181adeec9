"""Delivering a Ctrl-C at an exact point of a real DuckDB connection's work."""

from __future__ import annotations

import duckdb


class CtrlCAsBeginReturns:
    """The real connection, except that the first BEGIN is followed by a KeyboardInterrupt: DuckDB's
    execute looks for a pending signal, so a Ctrl-C can come out of the very call that opened a
    transaction, before the code that would roll it back."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self._connection, self.fired = connection, False

    def execute(self, statement: str, *parameters):
        result = self._connection.execute(statement, *parameters)
        if statement.startswith("BEGIN") and not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        return result

    def __getattr__(self, name: str):
        return getattr(self._connection, name)
