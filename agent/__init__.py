"""dutyd's daemon layer: configuration, scheduling, storage, CLI and HTTP."""
