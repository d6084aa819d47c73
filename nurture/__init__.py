"""nurture: an email nurture-sequence engine.

The package is layered (see docs/architecture.md): ``nurture.core`` is the pure core
(sequence model and loader, timing, decisions, rendering) and never touches the
clock, the database or the network; the shell (CLI, store, dispatcher, worker,
web) drives it.
"""

__version__ = "0.1.0"
