"""Pytest fixtures for this stand-in (loaded by the root conftest.py)."""
