"""EarthGPT training package: both stages, one machine to a GPU cluster.

Imports earthgpt; never imported by it. Entry point: ``python -m train CONFIG.yaml [key=value …]``.
"""
