"""`python -m harness.cli`: the same as `tunegate`."""

from harness.cli._commands import main

main()
