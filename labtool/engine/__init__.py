"""The engine: containers as things with names, state and a lifecycle.

The CLI only calls into here; a Docker Engine API server could call the same functions.
"""
