"""Every SQL example in the README runs on a real analysed faceset and answers something."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from curate.store import query_read_only

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_queries() -> list[tuple[str, str]]:
    """(title, sql) for each `-- Qn: …` block of the README's ten-questions section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Querying a faceset"):]
    block = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    parts = re.split(r"^-- (Q\d+: .*)$", block, flags=re.M)[1:]
    return [(title, sql.strip().rstrip(";")) for title, sql in zip(parts[::2], parts[1::2])]


def test_the_readme_has_ten_queries():
    titles = [title for title, _ in readme_queries()]
    assert titles == [f"Q{n}: {title.split(': ', 1)[1]}" for n, title in enumerate(titles, start=1)]
    assert len(titles) == 10


@pytest.mark.parametrize("title, sql", readme_queries(), ids=[t.split(":")[0] for t, _ in readme_queries()])
def test_readme_query_answers(analysed_faceset, title, sql):
    result = query_read_only(analysed_faceset, sql)
    assert result.columns, title
    assert result.rows, f"{title} returned no rows"
