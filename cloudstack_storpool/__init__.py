"""StorPool primary storage for Apache CloudStack: the management-side driver and its service."""

__version__ = "0.1.0"
