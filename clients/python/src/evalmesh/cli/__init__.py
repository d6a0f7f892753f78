"""The ``evalmesh`` command line, built on :mod:`evalmesh.client`."""

from evalmesh.cli.main import cli, main

__all__ = ["cli", "main"]
