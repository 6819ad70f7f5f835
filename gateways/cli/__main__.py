"""``python -m gateways.cli``: the ``gpucloud`` command, as the stack runner starts its roles."""

from gateways.cli.main import main

main()
