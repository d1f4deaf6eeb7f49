import sys

import pytest

import sim.fakes.cryptolib
from protocol import cipher


@pytest.fixture(scope="module")
def fake_cryptolib():
    """Make the "cryptolib" backend importable (as on an ESP32) for one module's tests; a module
    opts in with ``pytestmark = pytest.mark.usefixtures("fake_cryptolib")``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "cryptolib", sim.fakes.cryptolib)
        cipher.clear_cache()
        yield sim.fakes.cryptolib
    cipher.clear_cache()
