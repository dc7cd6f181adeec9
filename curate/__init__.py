"""Faceset curation: ingest images, analyse faces, score quality and store it all in DuckDB."""

__version__ = "0.1.0"
