"""The real bundle months later: the model's clock drives certificate renewal end to end.

One deployment, then ``Model.wait`` for 245 days of model time (update-status on Juju's
cadence, spaced out while nothing changes): every leaf certificate the charms issued for a
year is renewed once a third of its life is left (day ~243), through the relations, and the
cluster ends as active as it started. Slow (a few minutes on a shared machine).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from kaji import pki
from kaji.model.engine import Model

from .test_k8s_bundle import assert_all_active, deploy

DAYS = 245


def _certificates(model: Model) -> dict[tuple[str, str], pki.CertificateInfo]:
    found = {}
    for unit in model.world.units.values():
        if unit.principal is not None:
            continue
        root = model.unit_root(unit.name)
        for path in sorted(root.rglob("*.crt")):
            try:
                found[(unit.name, str(path.relative_to(root)))] = pki.read_certificate(
                    path.read_text()
                )
            except pki.PKIError:
                continue
    return found


def test_months_later_every_leaf_certificate_was_renewed_in_time(tmp_path: Path) -> None:
    model = deploy(tmp_path / "model")
    try:
        assert_all_active(model)
        start = model.now
        before = _certificates(model)
        leaves = {k for k, info in before.items() if not info.is_ca}
        assert leaves
        model.wait(DAYS * 24 * 60)
        assert model.now - start == timedelta(days=DAYS)
        assert_all_active(model)
        after = _certificates(model)
        for key in leaves:
            info = after[key]
            assert info.not_after > model.now, f"{key} expired"
            assert not pki.renewal_due((model.unit_root(key[0]) / key[1]).read_text(), model.now)
            assert info.not_before > start + timedelta(days=200), f"{key} was not renewed"
    finally:
        model.destroy()
