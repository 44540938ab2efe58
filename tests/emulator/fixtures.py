"""Pytest fixtures: ``emulator`` starts a server on a free loopback port for one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulator.server import Emulator


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    emu = Emulator().start()
    try:
        yield emu
    finally:
        emu.stop()
    assert not emu.errors, f"the emulator itself failed: {emu.errors}"
