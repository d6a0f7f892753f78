"""Test support shared by the test suites of every distribution, the cross-service tests, the
benchmarks and the chaos campaign: free ports, a throwaway PostgreSQL (``postgres``), our servers
as processes (``servers``), the whole mesh for tests (``mesh``) and a Docker engine (``docker``).

No production distribution depends on this one or imports it (tests/test_package_layers.py).
Nothing is imported here: each module loads only what it needs.
"""
