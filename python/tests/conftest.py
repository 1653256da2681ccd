"""Shared by the pytest files: the package must come from the build tree (PYTHONPATH)."""
import os

import pytest


@pytest.fixture
def packet_ref():
    """The C++ reference encoder (python/tests/packet_ref.cc), built by CMake."""
    path = os.environ.get("SPARSELINK_PACKET_REF")
    if not path:
        pytest.fail("SPARSELINK_PACKET_REF is not set: run the tests through ctest")
    return path


@pytest.fixture
def source_dir():
    return os.environ.get("SPARSELINK_SOURCE_DIR",
                          os.path.join(os.path.dirname(__file__), "..", ".."))
