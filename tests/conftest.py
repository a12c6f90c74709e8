"""Fixtures shared by several test modules."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Small-batch model tests gain nothing from intra-op threads, and on a shared, busy CPU the
    OpenMP workers spin against each other (10x the CPU time); one thread keeps these modules
    fast and their timing stable.  Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
