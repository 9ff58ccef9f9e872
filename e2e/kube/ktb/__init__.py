"""kube-testbed helpers shared by process-kubelet.py and service-proxy.py (Python 3 stdlib only)."""
