"""The testcontainers path, for developers with Docker: GPUCLOUD_TESTCONTAINERS=1.

Without Docker (as on the project's CI machine) the fixtures use the real local PostgreSQL
or the embedded one, and Tansu; tests that need containers skip with the reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


def wanted() -> bool:
    return os.environ.get("GPUCLOUD_TESTCONTAINERS") == "1"


def require() -> None:
    if not wanted():
        pytest.skip("set GPUCLOUD_TESTCONTAINERS=1 (and have Docker) to run against containers")
    if not docker_available():
        pytest.skip("GPUCLOUD_TESTCONTAINERS=1 but no Docker engine answers on this machine")


@contextmanager
def postgres() -> Iterator[str]:
    require()
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as pg:
        yield pg.get_connection_url()


@contextmanager
def kafka() -> Iterator[str]:
    require()
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as k:
        yield k.get_bootstrap_server()
