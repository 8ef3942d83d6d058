"""The Kubernetes control plane on one machine (no ops outside charm.py, relations, actions).

``config`` (the typed options), ``literals`` (paths, names), ``pki``, ``files``, ``services``,
``binaries`` and ``cluster_setup`` (the workload: plain data and a :class:`kaji.host.Host`),
``relations`` (this charm's relations through kaji.interfaces), ``status`` and ``actions``.
"""
