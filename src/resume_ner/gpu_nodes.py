"""GPU node sizes of Azure Kubernetes Service, and whether a task's requests fit one node of a size.

A pod whose CPU or memory request exceeds what a node can allocate stays Pending for ever, with no error in
the pipeline: the GPU tasks' requests are checked against the node pool's VM size (``pipeline.gpu_node_vm_size``)
when the config is loaded, and a run's ``gpu_count`` against its GPUs when the run starts.

Allocatable is the VM's capacity less what AKS reserves on every node (its documented kube-reserved CPU, the
conservative memory formula of AKS before 1.29 with its 750 Mi eviction threshold, so the figure holds on every
version) and less ``DAEMONSET_CPU_M`` / ``DAEMONSET_MEMORY_MI`` for the system DaemonSets of a GPU node (kube-proxy,
CNI, CSI drivers, the NVIDIA device plugin).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["GPU_NODE_SIZES", "GpuNodeSize", "cpu_millicores", "memory_mebibytes", "request_problems"]

DAEMONSET_CPU_M = 300
DAEMONSET_MEMORY_MI = 1024
EVICTION_MEMORY_MI = 750
_CPU_RESERVED_M = ((1, 60), (2, 100), (4, 140), (8, 180))  # AKS kube-reserved CPU up to 8 cores; +10m a core above
_MEMORY_RESERVED_TIERS = ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06))  # GiB of capacity, share reserved; 2% above
_CPU = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>m?)$")
_MEMORY = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>[KMGT]i?|)$")
_MEMORY_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


@dataclass(frozen=True)
class GpuNodeSize:
    """One VM size: its vCPUs, memory (GiB) and GPUs."""

    vcpus: int
    memory_gib: int
    gpus: int

    @property
    def allocatable_cpu_m(self) -> int:
        """Millicores a pod can request: capacity, less kube-reserved and the system DaemonSets."""
        return self.vcpus * 1000 - _kube_reserved_cpu_m(self.vcpus) - DAEMONSET_CPU_M

    @property
    def allocatable_memory_mi(self) -> int:
        """MiB a pod can request: capacity, less kube-reserved, the eviction threshold and the system DaemonSets."""
        return self.node_memory_mi - DAEMONSET_MEMORY_MI

    @property
    def node_memory_mi(self) -> int:
        """MiB the kubelet hands to pods in all (a memory limit above it lets one pod push the node into eviction)."""
        reserved, left = 0.0, float(self.memory_gib)
        for size, share in _MEMORY_RESERVED_TIERS:
            reserved += min(left, size) * share
            left -= min(left, size)
        reserved += max(left, 0.0) * 0.02
        return int((self.memory_gib - reserved) * 1024) - EVICTION_MEMORY_MI


GPU_NODE_SIZES: dict[str, GpuNodeSize] = {
    "Standard_NC4as_T4_v3": GpuNodeSize(4, 28, 1),
    "Standard_NC8as_T4_v3": GpuNodeSize(8, 56, 1),
    "Standard_NC16as_T4_v3": GpuNodeSize(16, 110, 1),
    "Standard_NC64as_T4_v3": GpuNodeSize(64, 440, 4),
    "Standard_NC6s_v3": GpuNodeSize(6, 112, 1),
    "Standard_NC12s_v3": GpuNodeSize(12, 224, 2),
    "Standard_NC24s_v3": GpuNodeSize(24, 448, 4),
    "Standard_NV36ads_A10_v5": GpuNodeSize(36, 440, 1),
    "Standard_NV72ads_A10_v5": GpuNodeSize(72, 880, 2),
    "Standard_NC24ads_A100_v4": GpuNodeSize(24, 220, 1),
    "Standard_NC48ads_A100_v4": GpuNodeSize(48, 440, 2),
    "Standard_NC96ads_A100_v4": GpuNodeSize(96, 880, 4),
    "Standard_ND96asr_v4": GpuNodeSize(96, 900, 8),
    "Standard_ND96amsr_A100_v4": GpuNodeSize(96, 1900, 8),
    "Standard_NC40ads_H100_v5": GpuNodeSize(40, 320, 1),
    "Standard_NC80adis_H100_v5": GpuNodeSize(80, 640, 2),
    "Standard_ND96isr_H100_v5": GpuNodeSize(96, 1900, 8),
}


def _kube_reserved_cpu_m(vcpus: int) -> int:
    if vcpus > 8:
        return 180 + 10 * (vcpus - 8)
    below = max((c, m) for c, m in _CPU_RESERVED_M if c <= vcpus)
    above = min((c, m) for c, m in _CPU_RESERVED_M if c >= vcpus)
    if below == above:
        return below[1]
    return below[1] + (above[1] - below[1]) * (vcpus - below[0]) // (above[0] - below[0])


def cpu_millicores(quantity: str) -> int:
    """A Kubernetes CPU quantity (``"4"``, ``"3.5"``, ``"500m"``) in millicores; ``ValueError`` when it is none."""
    match = _CPU.match(str(quantity).strip())
    if not match:
        raise ValueError(f"{quantity!r} is not a CPU quantity (e.g. '4', '3.5', '500m')")
    number = float(match["number"])
    return int(number if match["unit"] else number * 1000)


def memory_mebibytes(quantity: str) -> float:
    """A Kubernetes memory quantity (``"16Gi"``, ``"16G"``, ``"512Mi"``) in MiB; ``ValueError`` when it is none."""
    match = _MEMORY.match(str(quantity).strip())
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity (e.g. '16Gi', '16G', '512Mi')")
    return float(match["number"]) * _MEMORY_UNITS[match["unit"]] / 2**20


def request_problems(task: str, vm_size: str, *, cpu_request: str, memory_request: str, memory_limit: str) -> list[str]:
    """What keeps a pod of ``task`` with these requests from fitting one ``vm_size`` node ([] when it fits)."""
    node = GPU_NODE_SIZES[vm_size]
    problems = []
    if cpu_millicores(cpu_request) > node.allocatable_cpu_m:
        problems.append(
            f"{task}: cpu_request {cpu_request} exceeds the {node.allocatable_cpu_m}m a {vm_size} node can "
            f"allocate ({node.vcpus} vCPUs less AKS reservations and system DaemonSets)"
        )
    if memory_mebibytes(memory_request) > node.allocatable_memory_mi:
        problems.append(
            f"{task}: memory_request {memory_request} exceeds the {node.allocatable_memory_mi}Mi a "
            f"{vm_size} node can allocate ({node.memory_gib} GiB less AKS reservations and system "
            "DaemonSets)"
        )
    if memory_mebibytes(memory_limit) > node.node_memory_mi:
        problems.append(
            f"{task}: memory_limit {memory_limit} exceeds the {node.node_memory_mi}Mi a {vm_size} node gives its pods"
        )
    return problems
