"""Device mesh and shardings: a ('data', 'fsdp') mesh; the batch is split over both axes, parameters and
optimizer state over 'fsdp' (ZeRO-3 style) and replicated over 'data'.

jit + NamedSharding (not pmap): the same program runs on 1 CPU, 8 fake CPU devices, a GPU box or a TPU
pod slice, and each process hands over only its own rows of the global batch. The sharding of the state
is stated once, at the jit boundary (`state_shardings`); XLA's SPMD partitioner inserts the all-gathers
of a layer's weights before it is used and the reduce-scatters of its gradients.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax.config import InputError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
# Arrays smaller than this stay replicated under FSDP: biases and LayerNorm scales are a rounding error of
# the memory, and gathering each of them would cost one more small collective per layer.
FSDP_MIN_SIZE = 2**14


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
    """Starts JAX's multi-controller runtime when the launch asks for it; a no-op for one process.

    In order: explicit arguments (the entrypoint's --coordinator_address/--num_processes/--process_id),
    then the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables, then
    a multi-host Cloud TPU VM (TPU_WORKER_HOSTNAMES lists several hosts), where JAX finds everything
    itself. Must run before anything touches the devices.
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0"))
    process_id = process_id if process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", "-1"))
    if coordinator_address or num_processes > 1:
        if not (coordinator_address and num_processes > 1 and 0 <= process_id < num_processes):
            raise InputError(f"inconsistent multi-process launch: --coordinator_address={coordinator_address!r}, "
                             f"--num_processes={num_processes}, --process_id={process_id}; give all three (or the "
                             "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID variables) with "
                             "num_processes > 1 and 0 <= process_id < num_processes, or none for one process.")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id)
    elif "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        jax.distributed.initialize()


def make_mesh(mesh_config) -> Mesh:
    """The ('data', 'fsdp') mesh of `mesh_config`: fsdp = `mesh_config.fsdp` (1 when absent, as in the configs
    stored by older runs), data = `mesh_config.data`, or every device not used by fsdp when it is -1.

    A plain reshape of the devices ordered by (process, id), with 'fsdp' the minor axis: each fsdp group is
    consecutive devices, so on several hosts it stays within one host whenever fsdp divides the devices per
    host, and the per-layer all-gathers run over the fast local links (NVLink, ICI) while only the
    gradient reduction over 'data' crosses hosts. `mesh_utils.create_device_mesh` is not used: it orders
    TPU chips by physical topology, which can spread a group over hosts, and on CPU/GPU it is this reshape.
    One process may use fewer devices than it has (the first data x fsdp); several processes must use all.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    fsdp, data = int(getattr(mesh_config, "fsdp", 1)), int(mesh_config.data)
    if fsdp < 1:
        raise InputError(f"config.mesh.fsdp must be at least 1 (1: no sharding), got {fsdp}.")
    if data == -1 and len(devices) % fsdp:
        raise InputError(f"config.mesh.fsdp={fsdp} does not divide the {len(devices)} devices available (with "
                         f"config.mesh.data=-1, data takes every device not used by fsdp); use an fsdp that "
                         f"divides {len(devices)}, or set config.mesh.data so that data x fsdp <= {len(devices)}.")
    if data == -1:
        data = len(devices) // fsdp
    size = data * fsdp
    if data <= 0 or size > len(devices):
        requested = f"config.mesh.data={mesh_config.data}"
        if fsdp > 1:
            requested += f" x config.mesh.fsdp={fsdp} = {size} devices"
        raise InputError(f"{requested} but {len(devices)} devices are available; use -1 for all devices"
                         f"{' not used by fsdp' if fsdp > 1 else ''} or a count up to that.")
    if jax.process_count() > 1 and size != len(devices):
        raise InputError(f"config.mesh.data={data} x config.mesh.fsdp={fsdp} uses {size} of the {len(devices)} "
                         f"devices of {jax.process_count()} processes; with several processes the mesh must use "
                         f"them all: set config.mesh.data=-1.")
    return Mesh(np.asarray(devices[:size]).reshape(data, fsdp), (DATA_AXIS, FSDP_AXIS))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over every device ('data' and 'fsdp'), the rest replicated."""
    return NamedSharding(mesh, PartitionSpec((DATA_AXIS, FSDP_AXIS)))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def fsdp_spec(shape: tuple[int, ...], fsdp: int) -> PartitionSpec:
    """How one parameter or optimizer-state array of `shape` is split over an fsdp axis of size `fsdp`.

    Arrays of at least FSDP_MIN_SIZE elements are split along their largest dimension that `fsdp` divides
    (the first such on a tie); the rest, and everything when fsdp is 1, are replicated.
    """
    if fsdp == 1 or math.prod(shape) < FSDP_MIN_SIZE:
        return PartitionSpec()
    divisible = [dim for dim, length in enumerate(shape) if length % fsdp == 0]
    if not divisible:
        return PartitionSpec()
    split = max(divisible, key=lambda dim: (shape[dim], -dim))
    return PartitionSpec(*(FSDP_AXIS if dim == split else None for dim in range(len(shape))))


def state_shardings(abstract_state, mesh):
    """A NamedSharding for every leaf of `abstract_state` (arrays or ShapeDtypeStructs), by `fsdp_spec`.

    The rule looks only at shapes, so an optimizer moment (Adam's mu and nu, LAMB's) gets the sharding of
    its parameter; the step, the rng and scalar counts are replicated. `mesh` may be an AbstractMesh, to
    reason about a device count this machine does not have.
    """
    fsdp = dict(mesh.shape).get(FSDP_AXIS, 1)
    return jax.tree.map(lambda leaf: NamedSharding(mesh, fsdp_spec(tuple(leaf.shape), fsdp)), abstract_state)


def bytes_per_device(abstract_tree, shardings=None) -> int:
    """Bytes one device holds of a tree of ShapeDtypeStructs: its shard of every leaf, by the leaves' own
    shardings or by `shardings` (a matching tree, e.g. `state_shardings` over an AbstractMesh)."""
    leaves = jax.tree.leaves(abstract_tree)
    shardings = [leaf.sharding for leaf in leaves] if shardings is None else jax.tree.leaves(shardings)
    return sum(math.prod(sharding.shard_shape(tuple(leaf.shape))) * np.dtype(leaf.dtype).itemsize
               for leaf, sharding in zip(leaves, shardings, strict=True))


def _available_bytes_per_device() -> int | None:
    """An accelerator's own limit, or on CPU the host's available memory shared by its local devices."""
    device = jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics raise instead of returning None
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    return available // jax.local_device_count()


def check_state_fits(abstract_state, what: str = "the model") -> None:
    """Refuses, before anything is allocated, a train state that cannot fit: an impossible config (a
    200M-piece vocabulary) would otherwise allocate until the machine swaps, or block forever.

    Counts the state (parameters and optimizer moments, as sharded) plus one copy of the parameters for
    the gradients: a lower bound, as activations come on top.
    """
    limit = _available_bytes_per_device()
    params = getattr(abstract_state, "params", abstract_state)
    need = bytes_per_device(abstract_state) + bytes_per_device(params)
    if limit is None or need <= limit:
        return
    count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
    raise InputError(f"{what} needs at least {need / 2**30:,.1f} GiB per device for its {count:,} parameters, their "
                     f"gradients and optimizer state, but {limit / 2**30:,.1f} GiB are available; lower "
                     "config.model's sizes (vocab_size, hidden_size, num_hidden_layers), split the state over "
                     "more devices with config.mesh.fsdp, or use devices with more memory.")


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = "config.train.global_batch_size") -> int:
    """Returns this process's share of the global batch, or explains why it cannot be split."""
    devices = mesh.devices.size
    if global_batch_size % devices:
        raise InputError(f"{what} ({global_batch_size}) is not divisible by the {devices} devices of the mesh; "
                         f"use a multiple of {devices}.")
    return global_batch_size // jax.process_count()


def process_rows(global_rows):
    """This process's contiguous share of the rows of a global batch (an array or a dict of arrays)."""
    if isinstance(global_rows, dict):
        return {name: process_rows(value) for name, value in global_rows.items()}
    local = len(global_rows) // jax.process_count()
    first = jax.process_index() * local
    return global_rows[first:first + local]


def to_global_batch(host_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded on the data axis (multi-host safe)."""
    return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for name, value in host_batch.items()}
