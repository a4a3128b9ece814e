"""Every plugin setting: its registry, typed reads with scope precedence, writes through CloudStack."""
