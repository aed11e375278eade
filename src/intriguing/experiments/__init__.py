"""Experiments declared as data and run as a graph of cached, resumable steps."""

from intriguing.experiments.graph import RunStore, Step, StepContext, fingerprint, run_graph

__all__ = ["RunStore", "Step", "StepContext", "fingerprint", "run_graph"]
