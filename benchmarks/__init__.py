"""icrm's benchmarks, one module each, run as ``python -m benchmarks.<name>`` from the repository root.

They use icrm's public API and share :mod:`benchmarks.harness`; icrm itself never imports them.
"""
