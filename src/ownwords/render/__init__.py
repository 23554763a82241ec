"""Rendering, apart from computing: pure functions from stage results to PNG, markdown and HTML."""
