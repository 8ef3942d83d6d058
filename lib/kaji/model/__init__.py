"""The offline Juju model: load a bundle, check it, and (as it grows) run it without Juju."""
