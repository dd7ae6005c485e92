"""Benchmarks (not tests): `python -m bench.run [--quick]`, results in `bench/RESULTS.md`.

Each run starts its own stack on fresh temporary directories and free ports (embedded
PostgreSQL, a Temporal dev server on a temporary SQLite file, the worker and the API as
subprocesses), measures, and stops everything it started. All traffic goes to 127.0.0.1
(PostgreSQL over its Unix socket).
"""
