"""Kubernetes: the Kubeflow Training Operator PyTorchJob of multi-node final training (``k8s.pytorchjob``)."""
