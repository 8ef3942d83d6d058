#!/usr/bin/env python3
"""Charm entry point for kaji-worker: thin; the workload lives in lib/kaji."""

from __future__ import annotations

import ops

from kaji.operator import ReconcilingCharm


class WorkerCharm(ReconcilingCharm):
    """kaji-worker (skeleton: declares the relation contract, runs no workload yet)."""

    def reconcile(self) -> None:
        """Nothing to put on the machine until the workload is implemented."""

    def assess_status(self) -> ops.StatusBase:
        """Say truthfully that this revision runs no workload."""
        return ops.BlockedStatus("skeleton: Kubernetes node not implemented yet")


if __name__ == "__main__":  # pragma: nocover
    ops.main(WorkerCharm)
