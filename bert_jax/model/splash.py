"""Self-attention through the splash (block-sparse flash) attention Pallas kernel, for TPUs.

The kernel never materialises the [seq, seq] score matrix and skips the blocks its mask hides, so packed rows
(segment ids) and local windows cost only the blocks they touch. It is TPU-only; the tests run the same kernel
on CPU in Pallas interpret mode.
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from bert_jax.errors import InputError

try:
    from jax.experimental.pallas.ops.tpu import splash_attention as splash_lib
except ImportError:  # a JAX build without Pallas TPU ops
    splash_lib = None

# The kernel tiles keys in blocks of whole TPU lane rows (128) and its segment-id path needs 128-row query
# blocks too, so the sequence must be a multiple of this.
SEQ_MULTIPLE = 128
_BLOCK_CHOICES = (512, 384, 256, 128)  # largest first: fewer grid steps where the sequence allows


def available() -> bool:
    """True where the splash kernel can run compiled: a TPU backend and a JAX that ships the kernel."""
    return splash_lib is not None and jax.default_backend() == "tpu"


def check_usable(seq_length: int) -> None:
    """Refuse, in one line, a run that asks for attention_impl='splash' where the kernel cannot run it."""
    if not available():
        raise InputError(
            f"config.model.attention_impl='splash' needs a TPU, but JAX is running on {jax.default_backend()!r}; "
            "use 'dot_product'.")
    _check_seq_length(seq_length)


def _check_seq_length(seq_length: int) -> None:
    if seq_length % SEQ_MULTIPLE:
        raise InputError(
            f"config.model.attention_impl='splash' needs a sequence length that is a multiple of {SEQ_MULTIPLE}, "
            f"but it is {seq_length}; set config.data.max_seq_length to "
            f"{-(-seq_length // SEQ_MULTIPLE) * SEQ_MULTIPLE} or use attention_impl='dot_product'.")


def _block_size(seq_length: int) -> int:
    return next(block for block in _BLOCK_CHOICES if seq_length % block == 0)


def make_mask(seq_length: int, num_heads: int, local_window: int):
    """The kernel's static mask, [heads, seq, seq]: everything (FullMask) or the band |i - j| <= w // 2.

    Segment ids are and-ed with it inside the kernel, so instances of a packed row never see each other.
    """
    shape = (seq_length, seq_length)
    if local_window:
        half = local_window // 2
        head_mask = splash_lib.LocalMask(shape, window_size=(half, half), offset=0)
    else:
        head_mask = splash_lib.FullMask(shape)
    return splash_lib.MultiHeadMask([head_mask] * num_heads)


@functools.lru_cache(maxsize=16)
def _make_kernel(seq_length: int, num_heads: int, local_window: int, interpret: bool):
    """The multi-head kernel for one shape and window, built once: building it walks the mask block by block."""
    block = _block_size(seq_length)
    block_sizes = splash_lib.BlockSizes(
        block_q=block, block_kv=block, block_kv_compute=block,
        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block, use_fused_bwd_kernel=True)
    # Concrete arrays even when first called inside a jit trace, so the cached kernel holds no tracers.
    with jax.ensure_compile_time_eval():
        return splash_lib.make_splash_mha(
            make_mask(seq_length, num_heads, local_window), block_sizes=block_sizes, head_shards=1,
            q_seq_shards=1, interpret=interpret)


def splash_attention(query, key, value, segment_ids, *, local_window: int = 0, interpret: bool = False,
                     mesh: Mesh | None = None) -> jax.Array:
    """Softmax(q k^T / sqrt(head_dim)) v over the keys of the query's own segment (and window), no dropout.

    query, key, value: [batch, seq, heads, head_dim] in the compute dtype. segment_ids: [batch, seq] int32,
    0 = padding, k >= 1 = the k-th packed instance (an unpacked row: 1 on its tokens). Padding queries see
    the other padding tokens (id 0), so no row is empty and their (unused) outputs stay finite.
    local_window: 0 = the whole segment; w > 0 = keys with |i - j| <= w // 2 (ModernBERT's local layers).
    interpret: run the kernel in Pallas interpret mode (any backend; slow; for tests).
    mesh: on more than one device, the mesh the batch is sharded over (all its axes): the kernel then runs
    per device under shard_map, since XLA cannot partition a Pallas call itself.
    Returns the context, [batch, seq, heads, head_dim] in query's dtype.
    """
    if splash_lib is None:
        raise InputError("config.model.attention_impl='splash' needs JAX's Pallas TPU kernels, which this JAX "
                         "build lacks; use 'dot_product'.")
    _, seq_length, num_heads, head_dim = query.shape
    _check_seq_length(seq_length)
    kernel = _make_kernel(seq_length, num_heads, int(local_window), bool(interpret))
    scale = 1.0 / math.sqrt(head_dim)  # the kernel does not scale the scores itself
    to_heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # [batch, heads, seq, head_dim]
    query = to_heads_first((query * scale).astype(query.dtype))
    key, value = to_heads_first(key), to_heads_first(value)
    segment_ids = segment_ids.astype(jnp.int32)

    def attend(query, key, value, segment_ids):
        per_row = lambda q, k, v, ids: kernel(q, k, v, segment_ids=splash_lib.SegmentIds(q=ids, kv=ids))
        return jax.vmap(per_row)(query, key, value, segment_ids)

    if mesh is not None and mesh.size > 1:
        rows = PartitionSpec(tuple(mesh.axis_names))
        attend = jax.shard_map(attend, mesh=mesh, in_specs=(rows, rows, rows, rows), out_specs=rows,
                               check_vma=False)  # the Pallas call has no replication rule
    context = attend(query, key, value, segment_ids)  # [batch, heads, seq, head_dim]
    return to_heads_first(context).astype(query.dtype)

