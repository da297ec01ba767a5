"""Shared fixtures: real lws contexts over loopback, no mocks."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

import lws


@pytest.fixture(autouse=True)
def _lws_logs_quiet() -> Iterator[None]:
    lws.set_lws_log_level(logging.WARNING)
    yield


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
