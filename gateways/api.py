"""Kept only for ``gateways/processes.py`` until it moves to ``workers/``: import
``gateways.http.app`` instead. Delete at that merge."""

from gateways.http.app import create_app

__all__ = ["create_app"]
