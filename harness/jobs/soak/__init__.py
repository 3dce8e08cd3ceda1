"""The soak job: one runtime home through a long, weighted schedule of lifecycle faults, the
model's invariants checked after every step and its trends judged by slope over the run.

It keeps its own driver and delta-debugging shrinker: hypothesis' runner suits many short
examples (one holds ~1,500 steps), and its shrinker takes no failing schedule found elsewhere.
"""
