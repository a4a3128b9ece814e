"""The CloudStack connection layer: the one package in the project that names CloudStack API
commands and response fields.

- `client`: `CloudStackClient`, the facade the driver, the heartbeat and the settings use;
- `records`: the typed, frozen objects it answers, declared as field tables;
- `fields`: the generic builder and value converters those tables are made of;
- `signing`: request signatures the management server accepts;
- `failures`: the `cs` client's and `requests`' exceptions as the project's (`errors.py`).
"""
