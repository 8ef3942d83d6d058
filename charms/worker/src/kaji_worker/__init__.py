"""The kaji worker's workload: containerd and runc, kubelet, kube-proxy, a local API balancer.

No ops here: every module takes a Host and plain data, so it runs the same under the charm,
in unit tests, in the offline model and in workload tests against real daemons.

Modules: :mod:`.options` (charm config, validated), :mod:`.containerd`, :mod:`.apilb`
(haproxy on loopback), :mod:`.kube` (kubelet and kube-proxy files and services) and
:mod:`.node` (the whole node: install, reconcile, tear down).
"""
