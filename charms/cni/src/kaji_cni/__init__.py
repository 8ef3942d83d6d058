"""kaji-cni's code beside its ``charm.py``: options, relations, statuses and the workload.

``config`` (the typed options), ``literals`` (paths, names, endpoints), ``relations`` (the
``cni`` and ``network`` relations through :mod:`kaji.interfaces`), ``status`` (the messages),
and the workload, which knows nothing of ops: ``allocation`` (the leader's pod subnets),
``conflist`` (the CNI configuration) and ``dataplane`` (the kernel state of one node).
"""
