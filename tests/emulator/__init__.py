"""A faithful local OpenAI Batch API server (files, batches, chat completions) for tests."""

from tests.emulator.faults import BatchScript, Chaos, FaultInjector, Hold, HttpFault
from tests.emulator.server import Emulator
from tests.emulator.state import Clock, Seen, Timing

__all__ = ["BatchScript", "Chaos", "Clock", "Emulator", "FaultInjector", "Hold", "HttpFault", "Seen", "Timing"]
