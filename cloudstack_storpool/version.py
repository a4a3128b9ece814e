"""The release every distribution of the project carries; each pyproject.toml names the same one."""

__version__ = "0.1.0"
