"""Simulated field studies: landing files, a protocol and the true effects, for the demo, tests and benchmarks."""

from flows.simulation.field_study import simulate, truth

__all__ = ["simulate", "truth"]
