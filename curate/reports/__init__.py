"""Reports over a faceset: terminal data, self-contained HTML, SVG plots."""
