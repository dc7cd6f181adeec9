"""facesmith: the command-line shell over the curate, train and merge libraries."""

from curate import __version__

__all__ = ["__version__"]
