"""The kaji worker: containerd and runc, kubelet, kube-proxy, a local API balancer.

The charm's side (ops): :mod:`.relations` (kube-control and cni through kaji.interfaces) and
:mod:`.status` (the unit status from what a reconcile found). The workload (no ops: every module
takes a Host and plain data, so it runs the same under the charm, in unit tests, in the offline
model and in workload tests against real daemons): :mod:`.config` (charm config, validated),
:mod:`.literals` (names and paths), :mod:`.containerd`, :mod:`.apilb` (haproxy on loopback),
:mod:`.kube` (kubelet and kube-proxy files and services) and :mod:`.node` (the whole node:
install, reconcile, tear down).
"""
