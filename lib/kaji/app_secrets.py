"""Application-owned Juju secrets: where CA keys live."""

from __future__ import annotations

from collections.abc import Callable

import ops


def app_secret_content(
    charm: ops.CharmBase, label: str, make: Callable[[], dict[str, str]]
) -> dict[str, str] | None:
    """Return the content of the app-owned secret ``label``; the leader creates it once.

    This is where CA keys live: made by the first leader, inherited by every later one, never
    regenerated on leader change. A non-leader reads it when Juju lets it (units of the owning
    application can) and gets None when it does not exist yet.
    """
    try:
        return charm.model.get_secret(label=label).get_content(refresh=True)
    except ops.SecretNotFoundError:
        if not charm.unit.is_leader():
            return None
    content = make()
    charm.app.add_secret(content, label=label, description=f"kaji: {label}")
    return content
