"""Device mesh and shardings: the batch is split over the 'data' axis, parameters are replicated.

jit + NamedSharding (not pmap): the same program runs on 1 CPU, 8 fake CPU devices, a GPU box or a TPU
pod slice, and each process hands over only its own rows of the global batch.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bert_jax.config import InputError

DATA_AXIS = "data"


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
    """A 1-D mesh over the 'data' axis; `mesh_config.data` of -1 takes every device."""
    devices = jax.devices()
    size = len(devices) if mesh_config.data == -1 else int(mesh_config.data)
    if size <= 0 or size > len(devices):
        raise InputError(f"config.mesh.data={mesh_config.data} but {len(devices)} devices are available; "
                         "use -1 for all devices or a count up to that.")
    return Mesh(np.asarray(devices[:size]), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


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
