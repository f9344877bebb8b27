"""Errors that end a build with one clear line (the CLI prints them and exits 1)."""

from __future__ import annotations


class BuildError(Exception):
    """A build that cannot go on (unusable source, existing release, nothing accepted)."""
