"""Test helpers for the read side, for this project's tests and for users' own adapters.

* :mod:`projections.testing.contracts`: ``ReadModelStoreContract``, the suite every read model
  store adapter passes, and ``ProjectionRunnerContract``, the runner's guarantees on each
  (imports pytest, so it is not imported here).
"""
