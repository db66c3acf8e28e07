"""Serving the registry's checkpoints (issue 7): raw events -> model inputs -> representations."""
