"""Every SQL example in the README runs on a real analysed faceset and answers something."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import pytest

from curate.duplicates import analyze_duplicates
from curate.identities import analyze_identities
from curate.scan import ScanSettings, scan_folder
from curate.selection import SelectionSettings, select_and_export
from curate.store import query_read_only
from tests.curate.conftest import load_bgr

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_queries() -> list[tuple[str, str]]:
    """(title, sql) for each `-- Qn: …` block of the README's ten-questions section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Querying a faceset"):]
    block = re.search(r"```sql\n(.*?)```", section, re.S).group(1)
    parts = re.split(r"^-- (Q\d+: .*)$", block, flags=re.M)[1:]
    return [(title, sql.strip().rstrip(";")) for title, sql in zip(parts[::2], parts[1::2])]


@pytest.fixture(scope="module")
def faceset(tmp_path_factory, analyzer, obama_paths, biden_path, t1_path) -> Path:
    folder = tmp_path_factory.mktemp("readme") / "photos"
    folder.mkdir()
    for path in [*obama_paths, biden_path, t1_path]:
        shutil.copy(path, folder / path.name)
    image = load_bgr(obama_paths[0])
    cv2.imwrite(str(folder / "obama_copy.jpg"), cv2.resize(image, None, fx=0.7, fy=0.7))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    database = folder.parent / "faceset.duckdb"
    scan_folder(folder, database, ScanSettings(resolution=128), analyzer=analyzer)
    analyze_duplicates(database)
    analyze_identities(database, pin_image="obama.jpg")
    select_and_export(database, folder.parent / "selected", SelectionSettings(budget=6))
    return database


def test_the_readme_has_ten_queries():
    titles = [title for title, _ in readme_queries()]
    assert titles == [f"Q{n}: {title.split(': ', 1)[1]}" for n, title in enumerate(titles, start=1)]
    assert len(titles) == 10


@pytest.mark.parametrize("title, sql", readme_queries(), ids=[t.split(":")[0] for t, _ in readme_queries()])
def test_readme_query_answers(faceset, title, sql):
    result = query_read_only(faceset, sql)
    assert result.columns, title
    assert result.rows, f"{title} returned no rows"
