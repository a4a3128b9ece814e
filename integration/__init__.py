"""Stand-ins for StorPool and CloudStack, the local stack launcher and the end-to-end tests."""
