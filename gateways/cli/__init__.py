"""The ``gpucloud`` command line: process roles, ops tools, catalog, ledger, quota, quarantine."""
