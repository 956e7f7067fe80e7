"""Client commands: they talk to a running node over its control socket (no daemon code)."""
