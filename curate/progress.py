"""The callback type long-running library calls report progress through."""

from typing import Callable

# (done, total) — total 0 when not known yet; the CLI draws it as a progress bar.
ProgressCallback = Callable[[int, int], None]
