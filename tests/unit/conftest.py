"""Fixtures shared by unit modules (the session-wide environment and fixtures are in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and steady when other processes share the cores
    (10x faster on a busy 2-core CPU). Modules of tiny-model tests use it for every test with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
