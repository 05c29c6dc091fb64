"""The advisor's input error. Its YAML files (answers, rules) load through harness.base._errors.YamlDoc, the one
YAML-with-line-numbers loader of the project."""

from __future__ import annotations

from harness.base import UserError


class AdvisorInputError(UserError):
    """A problem with the user's answers, rules or data; the CLI prints it and exits 2 (a harness UserError)."""
