"""Runbook documents: a static HTML site, built from the topology and the runbooks, that
people can read and follow when revive itself, the wiki and the lost DC are all gone.

``build_site`` writes it (``revive docs build``); ``manual`` turns each step into what to do
by hand with the estate's own tools; ``content`` computes what the pages show from the same
planning functions the runbooks run, so the documents never tell another order than revive.
"""

from revive.docs.build import build_site

__all__ = ["build_site"]
