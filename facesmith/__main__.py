"""`python -m facesmith` runs the command line."""

from facesmith.cli import app

app(prog_name="facesmith")
