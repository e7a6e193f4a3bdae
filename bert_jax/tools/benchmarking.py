"""How fast the train step runs: step time, throughput, model FLOPs, MFU, peak memory, and baselines.

What is timed is the real train step (`train.make_train_step`: on-device masking, forward, backward,
clipping, AdamW, donated state) on one synthetic batch already on the devices, so the figures are those
of the device program alone; `measure_input_pipeline` times the host pipeline on its own, to show
whether it could keep up. The protocol is the same for ours and for the baselines: compile (lower +
compile, timed apart), `warmup_steps` untimed steps, then `steps` steps each ended by a device sync,
reported as the median and the 90th percentile, because timings on shared machines have outliers.

Model FLOPs per step = `model_stats.training_flops_per_token(config, seq_len) * batch_size * seq_len`
(forward + backward of the dense layers, the attention scores and context, and the MLM head on the
max_predictions_per_seq gathered positions: the formula is in `model_stats`' docstring). MFU =
achieved model FLOP/s / (peak dense FLOP/s of one device for the compute dtype x number of devices).
Baselines are credited with the same model FLOPs, so their MFU ratio is their throughput ratio; HF's
BertForPreTraining projects every position onto the vocabulary, so it really performs more
(`hf_all_positions_flops_per_step`).
"""

from __future__ import annotations

import copy
import resource
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.data import sequence_packing
from bert_jax.data.vocab import DEFAULT_SPECIAL_IDS, SPECIAL_TOKENS
from bert_jax.hf import names as hf_names
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import optim, teacher
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import parallel
from bert_jax.tools import model_stats

BASELINES = ("none", "hf_torch", "hf_flax")
_NUM_SPECIAL = len(SPECIAL_TOKENS)  # synthetic ids 0..4 are the specials, as in bert_jax tokenizers

# Peak dense (no sparsity) TFLOP/s of ONE device, by compute dtype. float32 is what XLA runs float32
# matmuls at by default: TF32 tensor cores on NVIDIA since Ampere, single bf16 passes on TPU. Matched
# against `jax.devices()[0].device_kind` in order, first case-insensitive substring wins; an entry
# without figures marks a device whose peak we have not checked (MFU then reads unknown).
PEAK_TFLOPS: tuple[tuple[str, dict[str, float] | None], ...] = (
    ("H100 NVL", None),
    ("H100 PCIe", {"bfloat16": 756.0, "float32": 378.0}),
    ("H100", {"bfloat16": 989.0, "float32": 494.5}),  # SXM: 'NVIDIA H100 80GB HBM3'
    ("H200 NVL", None),
    ("H200", {"bfloat16": 989.0, "float32": 494.5}),
    ("A100", {"bfloat16": 312.0, "float32": 156.0}),
    ("TPU v4", {"bfloat16": 275.0, "float32": 275.0}),
    ("TPU v5 lite", {"bfloat16": 197.0, "float32": 197.0}),  # v5e
    ("TPU v5e", {"bfloat16": 197.0, "float32": 197.0}),
    ("TPU v5", {"bfloat16": 459.0, "float32": 459.0}),  # v5p reports 'TPU v5'
    ("TPU v6 lite", {"bfloat16": 918.0, "float32": 918.0}),  # v6e (Trillium)
    ("TPU v6e", {"bfloat16": 918.0, "float32": 918.0}),
)


# Named sets of XLA flags for `--xla_flag_sets`, appended to XLA_FLAGS before the backend starts, so that
# each one's effect is measured in a run of its own. GPU flags parse (and do nothing) on CPU builds; the
# cpu_* sets are XLA CPU flags.
XLA_FLAG_SETS: dict[str, str] = {
    # Schedules collectives and async copies to overlap with compute (what multi-GPU runs want).
    "latency_hiding": "--xla_gpu_enable_latency_hiding_scheduler=true",
    # Command buffers (CUDA graphs) are on by default in current XLA; this measures what they bring.
    "no_command_buffers": "--xla_gpu_enable_command_buffer=",
    # cuBLAS instead of Triton for the matmuls XLA would otherwise fuse and autotune in Triton.
    "no_triton_gemm": "--xla_gpu_enable_triton_gemm=false",
    # CPU: XNNPACK's kernels for the dots and the fusions around them (bf16 dots on AVX512-BF16 CPUs).
    "cpu_xnnpack": "--xla_cpu_use_xnnpack=true",
    # CPU: oneDNN's matmul kernels instead of XLA's Eigen ones.
    "cpu_onednn": "--xla_cpu_use_onednn=true",
    # CPU: 512-bit vectors in XLA's own loops (it prefers 256 so as not to lower the clock of older Intel CPUs).
    "cpu_vector_512": "--xla_cpu_prefer_vector_width=512",
}

# The config switches that change speed or memory but not the loss, recorded with every benchmark result.
SWITCHES = ("model.dtype", "model.attention_impl", "model.vocab_pad_multiple", "model.scan_layers",
            "model.remat_policy", "model.gather_masked_positions", "train.donate_state", "data.pack_sequences",
            "model.matmul_dtype", "model.fused_qkv", "train.dropout_prng")


def xla_flags(names: list[str]) -> str:
    """The XLA flags of the named sets, space-separated; an unknown name is an InputError."""
    unknown = [name for name in names if name not in XLA_FLAG_SETS]
    if unknown:
        raise config_lib.InputError(f"--xla_flag_sets: unknown set(s) {unknown}; the sets are {sorted(XLA_FLAG_SETS)}.")
    return " ".join(XLA_FLAG_SETS[name] for name in names)


def switches(config) -> dict:
    """{'model.attention_impl': 'xla', ...}: the speed switches of `config`, for the results table."""
    values = {}
    for path in SWITCHES:
        group, name = path.split(".")
        values[path] = config[group].get(name)
    return values


class BaselineUnavailable(RuntimeError):
    """A baseline's libraries are missing here; the message says what to install, and where."""


def peak_flops_per_second(device_kind: str, dtype: str) -> float | None:
    """Peak dense FLOP/s of one `device_kind` device in `dtype`, or None when unknown (CPUs included)."""
    for pattern, peaks in PEAK_TFLOPS:
        if pattern.lower() in device_kind.lower():
            return None if peaks is None or dtype not in peaks else peaks[dtype] * 1e12
    return None


def model_flops_utilization(achieved_flops_per_second: float, device_kind: str, dtype: str,
                            num_devices: int = 1) -> float | None:
    """Achieved model FLOP/s over the peak of `num_devices` such devices; None when the peak is unknown."""
    peak = peak_flops_per_second(device_kind, dtype)
    return None if peak is None else achieved_flops_per_second / (peak * num_devices)


def prepare_config(config, batch_size: int, seq_len: int, teacher_config=None):
    """A validated copy of `config` for global batch `batch_size` of `seq_len` tokens; a distillation config
    takes its teacher's shape from `teacher_config` (a pretraining config: the weights are random)."""
    if batch_size <= 0:
        raise config_lib.InputError(f"--batch_size must be positive, got {batch_size}.")
    if config.distill.recipe:
        if teacher_config is None:
            raise config_lib.InputError("a distillation config needs the teacher's shape: give --teacher_config="
                                        "<a pretraining config, e.g. configs/bert_base.py>.")
        config = teacher.with_teacher(config, config_lib.validate(teacher_config))
    config = copy.deepcopy(config)
    config.data.max_seq_length = seq_len
    config.train.global_batch_size = batch_size
    return config_lib.validate(config)


def synthetic_batch(batch_size: int, seq_len: int, vocab_size: int, *, padding_fraction: float = 0.0,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """`[CLS] A [SEP] B [SEP]` of random ids in [5, vocab_size), the last `padding_fraction` padded.

    Returns int32 `input_ids`, `segment_ids`, `attention_mask` [batch, seq] and `next_sentence_labels`,
    `mask_seeds` [batch]: what `make_pretraining_iterator` yields.
    """
    ids = DEFAULT_SPECIAL_IDS
    length = seq_len - round(padding_fraction * seq_len)  # real tokens per row
    if not 0.0 <= padding_fraction < 1.0 or length < 3:
        raise config_lib.InputError(f"--padding_fraction={padding_fraction} leaves {length} real tokens of "
                                    f"{seq_len}; use a fraction in [0, 1) that keeps at least 3.")
    rng = np.random.default_rng(seed)
    input_ids = np.full((batch_size, seq_len), ids.pad, np.int32)  # [batch, seq]
    input_ids[:, :length] = rng.integers(_NUM_SPECIAL, vocab_size, size=(batch_size, length))
    split = length // 2
    input_ids[:, [0, split, length - 1]] = [ids.cls, ids.sep, ids.sep]
    segment_ids = np.zeros((batch_size, seq_len), np.int32)  # [batch, seq]
    segment_ids[:, split + 1:length] = 1
    attention_mask = np.zeros((batch_size, seq_len), np.int32)  # [batch, seq]
    attention_mask[:, :length] = 1
    return {"input_ids": input_ids, "segment_ids": segment_ids, "attention_mask": attention_mask,
            "next_sentence_labels": rng.integers(0, 2, size=batch_size).astype(np.int32),
            "mask_seeds": np.arange(batch_size, dtype=np.int32)}


def synthetic_packed_batch(batch_size: int, seq_len: int, vocab_size: int, *, max_instances_per_pack: int,
                           padding_fraction: float = 0.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Packed rows of `max_instances_per_pack` (K) equal `synthetic_batch` pairs, the last `padding_fraction` padded.

    Returns what `make_pretraining_iterator(pack_sequences=True)` yields: int32 `input_ids`,
    `segment_ids`, `attention_mask` (instance ids), `position_ids` [batch, seq], `pair_positions`,
    `next_sentence_labels` and float32 `pair_weights` [batch, K], int32 `mask_seeds` [batch].
    """
    length = (seq_len - round(padding_fraction * seq_len)) // max_instances_per_pack  # tokens per instance
    if not 0.0 <= padding_fraction < 1.0 or length < 3:
        raise config_lib.InputError(f"--padding_fraction={padding_fraction} leaves {length} real tokens for each of "
                                    f"{max_instances_per_pack} instances in {seq_len}; keep at least 3 per instance.")
    pairs = synthetic_batch(batch_size * max_instances_per_pack, length, vocab_size, seed=seed)
    instances = [{key: value[i] for key, value in pairs.items()} for i in range(batch_size * max_instances_per_pack)]
    rows = [sequence_packing.pack_row(instances[r * max_instances_per_pack:(r + 1) * max_instances_per_pack], seq_len,
                                      max_instances_per_pack, DEFAULT_SPECIAL_IDS.pad) for r in range(batch_size)]
    return {key: np.stack([row[key] for row in rows]) for key in sequence_packing.PACKED_FEATURE_KEYS}


def time_steps(run_step: Callable[[], None], steps: int, warmup_steps: int, *, min_seconds: float = 0.0,
               max_steps: int | None = None) -> list[float]:
    """Seconds of each timed call of `run_step` (which must end in a device sync), after warm-up: `steps`
    calls, then more while their sum is under `min_seconds` (at most `max_steps` in all), so that a short
    step is timed for long enough to average out a shared machine's noise and a long one is not repeated."""
    for _ in range(warmup_steps):
        run_step()
    times = []
    while len(times) < steps or (sum(times) < min_seconds and (max_steps is None or len(times) < max_steps)):
        start = time.perf_counter()
        run_step()
        times.append(time.perf_counter() - start)
    return times


def throughput(times: list[float], *, batch_size: int, seq_len: int, flops_per_step: float, device_kind: str,
               dtype: str, num_devices: int) -> dict:
    """Step-time statistics and the rates derived from the median step."""
    median = float(np.median(times))
    achieved = flops_per_step / median
    return {"step_time_median_s": median, "step_time_p90_s": float(np.percentile(times, 90)),
            "sequences_per_second": batch_size / median, "tokens_per_second": batch_size * seq_len / median,
            "achieved_tflops": achieved / 1e12,
            "mfu": model_flops_utilization(achieved, device_kind, dtype, num_devices)}


def model_flops_per_step(config, batch_size: int, seq_len: int) -> float:
    return model_stats.training_flops_per_token(config, seq_len) * batch_size * seq_len


def hf_all_positions_flops_per_step(config, batch_size: int, seq_len: int) -> float:
    """FLOPs HF's BertForPreTraining really spends: its MLM head (transform + decoder) runs on every position."""
    m = config.model
    predictions = min(config.masking.max_predictions_per_seq, seq_len)
    head = m.hidden_size * m.hidden_size + m.hidden_size * m.vocab_size  # per position, forward multiply-adds
    extra = 6 * (seq_len - predictions) * head * batch_size
    return model_flops_per_step(config, batch_size, seq_len) + extra


def peak_memory() -> tuple[int, str]:
    """Peak bytes in use on the local devices when they report it, else this process's peak host RSS."""
    try:
        stats = [device.memory_stats() for device in jax.local_devices()]
    except Exception:  # noqa: BLE001 - backends without memory statistics raise instead of returning None
        stats = [None]
    if all(s and "peak_bytes_in_use" in s for s in stats):
        return max(int(s["peak_bytes_in_use"]) for s in stats), "device_peak_bytes_in_use"
    return host_peak_rss(), "host_peak_rss"


def host_peak_rss() -> int:
    """This process's peak resident set size so far, in bytes (compilation included)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS
    return int(rss if sys.platform == "darwin" else rss * 1024)


def benchmark_train_step(config, *, steps: int, warmup_steps: int, padding_fraction: float = 0.0,
                         host_batches: list[dict[str, np.ndarray]] | None = None, tokenizer=None,
                         min_seconds: float = 0.0, max_steps: int | None = None) -> dict:
    """Compiles and times the real train step on a mesh over all devices (see the module docstring).

    `host_batches` (this process's rows, as the pipeline yields them, all of one shape) replace the
    synthetic batch and are used in turn, step after step; `tokenizer` is then theirs (it decides the ids
    masking draws from). `min_seconds` and `max_steps` make the timing adaptive (`time_steps`).
    """
    if steps < 1 or warmup_steps < 0:
        raise config_lib.InputError(f"--steps must be >= 1 and --warmup_steps >= 0, got {steps} and {warmup_steps}.")
    mesh = parallel.make_mesh(config.mesh)
    batch_size, seq_len = config.train.global_batch_size, config.data.max_seq_length
    local_batch_size = parallel.check_batch_size(batch_size, mesh, "--batch_size")
    setup, create_state = steps_lib.make_pretraining_setup(config, mesh, tokenizer)
    host_batches = host_batches or [_synthetic_host_batch(config, local_batch_size, padding_fraction)]
    batches = [parallel.to_global_batch(b, parallel.batch_sharding(mesh)) for b in host_batches]
    if config.distill.recipe:  # a teacher of random weights: its cost, not its knowledge, is measured
        teacher_params = nnx.state(pretraining_heads.build_teacher(config), nnx.Param)
        state = jax.block_until_ready(create_state(jax.device_put(teacher_params,
                                                                  steps_lib.teacher_of(setup.state_sharding))))
    else:
        state = jax.block_until_ready(create_state())

    start = time.perf_counter()
    compiled = steps_lib.make_train_step(setup, mesh, config.train).lower(state, batches[0]).compile()
    compile_seconds = time.perf_counter() - start
    rss_after_compile = host_peak_rss()  # on CPU, what the state and compiling cost before any step runs
    holder = {"state": state, "calls": 0}

    def run_step():
        batch = batches[holder["calls"] % len(batches)]
        holder["state"], metrics = compiled(holder["state"], batch)  # the old state's buffers are donated
        holder["calls"] += 1
        jax.block_until_ready((holder["state"], metrics))

    times = time_steps(run_step, steps, warmup_steps, min_seconds=min_seconds, max_steps=max_steps)
    device = mesh.devices.flat[0]
    flops = model_flops_per_step(config, batch_size, seq_len)
    memory_bytes, memory_source = peak_memory()
    median = float(np.median(times))
    rows = batch_figures(host_batches)
    return {"batch_size": batch_size, "seq_len": seq_len, "steps": len(times), "warmup_steps": warmup_steps,
            "padding_fraction": padding_fraction, "platform": device.platform, "device_kind": device.device_kind,
            "num_devices": int(mesh.devices.size), "dtype": config.model.dtype, "compile_seconds": compile_seconds,
            **throughput(times, batch_size=batch_size, seq_len=seq_len, flops_per_step=flops,
                         device_kind=device.device_kind, dtype=config.model.dtype, num_devices=mesh.devices.size),
            "model_flops_per_step": flops, "peak_memory_bytes": memory_bytes, "memory_source": memory_source,
            "step_times_s": times, "host_peak_rss_after_compile_bytes": rss_after_compile, **compiled_figures(compiled),
            # With packing each row (a "sequence" above, as MLPerf counts them) holds several instances.
            "instances_per_second": rows["instances_per_batch"] * jax.process_count() / median,
            "real_token_fraction": rows["real_token_fraction"],
            "real_tokens_per_second": rows["real_tokens_per_batch"] * jax.process_count() / median}


def _synthetic_host_batch(config, local_batch_size: int, padding_fraction: float) -> dict[str, np.ndarray]:
    """This process's synthetic rows: packed ones of `max_instances_per_pack` pairs when the config packs."""
    seq_len, vocab = config.data.max_seq_length, config.data.tokenizer_vocab_size
    packs = config.data.max_instances_per_pack if config.data.pack_sequences else 1
    seed = config.train.seed + jax.process_index()
    if packs > 1:
        return synthetic_packed_batch(local_batch_size, seq_len, vocab, max_instances_per_pack=packs,
                                      padding_fraction=padding_fraction, seed=seed)
    return synthetic_batch(local_batch_size, seq_len, vocab, padding_fraction=padding_fraction, seed=seed)


def batch_figures(host_batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Per batch, on average: instances (a packed row's real `pair_weights`, else one per row), real
    (non-padding) tokens, and the fraction of all positions those are."""
    instances = [float(np.sum(b["pair_weights"])) if "pair_weights" in b else float(b["input_ids"].shape[0])
                 for b in host_batches]
    real = [float(np.count_nonzero(b["attention_mask"])) for b in host_batches]
    positions = sum(int(b["attention_mask"].size) for b in host_batches)
    return {"instances_per_batch": float(np.mean(instances)), "real_tokens_per_batch": float(np.mean(real)),
            "real_token_fraction": sum(real) / positions}


def compiled_figures(compiled) -> dict[str, int | float | None]:
    """XLA's own account of a compiled step: its buffers (`xla_argument_bytes`, `xla_output_bytes`,
    `xla_alias_bytes`: outputs written into donated arguments, `xla_temp_bytes`), their peak
    `xla_total_bytes` = argument + output - alias + temp, and `xla_flops`; None where the backend says nothing."""
    figures = dict.fromkeys(("xla_argument_bytes", "xla_output_bytes", "xla_alias_bytes", "xla_temp_bytes",
                             "xla_total_bytes", "xla_flops"))
    try:
        memory = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - backends without the analysis raise instead of returning None
        memory = None
    if memory is not None:
        figures.update(xla_argument_bytes=int(memory.argument_size_in_bytes),
                       xla_output_bytes=int(memory.output_size_in_bytes),
                       xla_alias_bytes=int(memory.alias_size_in_bytes), xla_temp_bytes=int(memory.temp_size_in_bytes))
        figures["xla_total_bytes"] = (figures["xla_argument_bytes"] + figures["xla_output_bytes"]
                                      - figures["xla_alias_bytes"] + figures["xla_temp_bytes"])
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - as above
        cost = None
    cost = cost[0] if isinstance(cost, list) and cost else cost
    if isinstance(cost, dict) and "flops" in cost:
        figures["xla_flops"] = float(cost["flops"])
    return figures


def measure_input_pipeline(config, workdir: str, *, seconds: float, num_workers: int) -> dict:
    """Host sequences/s of `make_pretraining_iterator` at this config's batch and length, in-process and with workers.

    Builds (or reuses) the corpus, tokenizer and tokenized splits in `workdir` as training does. Each
    rate is timed over `seconds` after `seconds / 2` of untimed batches, which pay for indexing the
    corpus and starting the worker processes.
    """
    if seconds <= 0:
        raise config_lib.InputError(f"--pipeline_seconds must be positive, got {seconds}.")
    # Lazy: the corpus readers import tensorflow_datasets and array_record, which the step timing alone does
    # not need (a GPU image without them runs the benchmark with only grain and ml_collections carried).
    from bert_jax.data import corpus as corpus_lib
    from bert_jax.data import pipeline

    tokenizer, sources = corpus_lib.prepare_default_or_given(config.data, workdir)
    local_batch_size = config.train.global_batch_size // jax.process_count()

    def rate(workers: int) -> float:
        iterator = pipeline.iterator_from_config(
            config, sources["train"], tokenizer.special_ids, local_batch_size, process_index=jax.process_index(),
            process_count=jax.process_count(), num_workers=workers)
        warm_until = time.perf_counter() + seconds / 2  # workers start slowly: their first batches lag
        while time.perf_counter() < warm_until:
            next(iterator)
        batches, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            next(iterator)
            batches += 1
        elapsed = time.perf_counter() - start
        getattr(iterator, "close", lambda: None)()  # stops Grain's worker processes
        return batches * local_batch_size / elapsed

    return {"pipeline_seconds": seconds, "pipeline_sequences_per_second_in_process": rate(0),
            "pipeline_num_workers": num_workers, "pipeline_sequences_per_second_workers": rate(num_workers)}


def mlm_labels(input_ids: np.ndarray, attention_mask: np.ndarray, max_predictions: int,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """~15% of each row's real non-special tokens (at most `max_predictions`) replaced by [MASK].

    Returns (masked input_ids, labels) [batch, seq]; labels are the original ids there, -100 elsewhere
    (HF's ignore index). The baselines need no 80/10/10: its cost is noise next to a train step.
    """
    rng = np.random.default_rng(seed)
    masked, labels = input_ids.copy(), np.full_like(input_ids, -100)
    for row in range(input_ids.shape[0]):
        candidates = np.flatnonzero((input_ids[row] >= _NUM_SPECIAL) & (attention_mask[row] > 0))
        count = min(max_predictions, len(candidates), max(1, round(0.15 * len(candidates))))
        chosen = rng.choice(candidates, size=count, replace=False)
        labels[row, chosen] = input_ids[row, chosen]
        masked[row, chosen] = DEFAULT_SPECIAL_IDS.mask
    return masked, labels


def _hf_bert_config(config, transformers):
    """HF BertConfig with this config's sizes; only BERT-shaped mlm_nsp configs have an HF twin to compare."""
    if hf_names.hf_architecture(config) != "BertForPreTraining":
        raise config_lib.InputError(
            f"the baselines are HF's BertForPreTraining, which config.objective={config.objective!r} with "
            f"embedding_size={config.model.embedding_size}, num_hidden_groups={config.model.num_hidden_groups} "
            "is not; benchmark a BERT config (objective 'mlm_nsp') against them.")
    fields = hf_names.hf_config_dict(config, pad_token_id=DEFAULT_SPECIAL_IDS.pad)
    fields = {k: v for k, v in fields.items() if k not in ("architectures", "model_type")}
    return transformers.BertConfig(**fields, attn_implementation="sdpa")


_HF_FLAX_HELP = (
    "--baseline=hf_flax needs transformers' FlaxBertForPreTraining, and this environment has {found} "
    "(transformers 5 removed the Flax models). Install transformers==4.57.6 in a separate virtual environment "
    "(it cannot share one with transformers 5): python -m venv /tmp/hf_flax && /tmp/hf_flax/bin/pip install -e . "
    "transformers==4.57.6, then run this command with /tmp/hf_flax/bin/python.")


def import_baseline(name: str):
    """The `transformers` module with what baseline `name` needs, or BaselineUnavailable saying what to install."""
    try:
        import transformers  # lazy: only the baselines need it
        if name == "hf_torch":
            import torch  # noqa: F401 - only checks that torch is there
    except ImportError as e:
        if name == "hf_torch":
            raise BaselineUnavailable(f"--baseline=hf_torch needs torch and transformers ({e}); install them "
                                      "with pip install torch && pip install -e '.[hf]'.") from e
        raise BaselineUnavailable(_HF_FLAX_HELP.format(found="no transformers")) from e
    if name == "hf_flax":
        try:
            transformers.FlaxBertForPreTraining  # noqa: B018 - a lazy attribute: importing it is the check
        except Exception as e:  # AttributeError in transformers 5, ImportError without flax
            raise BaselineUnavailable(_HF_FLAX_HELP.format(found=f"transformers {transformers.__version__}")) from e
    return transformers


def check_baseline(config, name: str) -> None:
    """Raises now, before minutes of work, if baseline `name` cannot run for `config` in this environment."""
    if name == "hf_torch" and config.train.optimizer != "adamw":
        raise config_lib.InputError(f"the hf_torch baseline steps with torch's AdamW, so it does not compare with "
                                    f"config.train.optimizer={config.train.optimizer!r}; benchmark with "
                                    "--config.train.optimizer=adamw, or use --baseline=hf_flax (this optimizer).")
    _hf_bert_config(config, import_baseline(name))


def hf_torch_baseline(config, host_batch: dict[str, np.ndarray], *, steps: int, warmup_steps: int) -> dict:
    """Times HF's PyTorch BertForPreTraining (sdpa attention, AdamW, clipping) on the same batch."""
    transformers = import_baseline("hf_torch")
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high")  # TF32 on NVIDIA, as XLA's default precision for float32
    torch.manual_seed(config.train.seed)
    model = transformers.BertForPreTraining(_hf_bert_config(config, transformers)).to(device).train()
    t = config.train
    decays = {True: [], False: []}  # as optim.weight_decay_mask: no decay for biases and LayerNorm
    for name, parameter in model.named_parameters():
        decays[not (name.endswith("bias") or "LayerNorm" in name)].append(parameter)
    optimizer = torch.optim.AdamW([{"params": decays[True], "weight_decay": t.weight_decay},
                                   {"params": decays[False], "weight_decay": 0.0}], lr=t.learning_rate,
                                  betas=(t.adam_b1, t.adam_b2), eps=t.adam_eps, fused=device.type == "cuda")
    input_ids, labels = mlm_labels(host_batch["input_ids"], host_batch["attention_mask"],
                                   config.masking.max_predictions_per_seq, config.train.seed)
    inputs = {name: torch.as_tensor(value, dtype=torch.long, device=device) for name, value in (
        ("input_ids", input_ids), ("token_type_ids", host_batch["segment_ids"]),
        ("attention_mask", host_batch["attention_mask"]), ("labels", labels),
        ("next_sentence_label", host_batch["next_sentence_labels"]))}
    autocast = config.model.dtype == "bfloat16" and device.type == "cuda"

    def run_step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    first_step_seconds = time_steps(run_step, 1, 0)[0]  # lazy initialisation, cuDNN/cuBLAS heuristics
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_steps(run_step, steps, warmup_steps)
    peak = int(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None
    device_kind = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    return _baseline_figures(config, "hf_torch", times, device_kind=device_kind,
                             dtype="bfloat16" if autocast else "float32", peak_memory_bytes=peak,
                             first_step_seconds=first_step_seconds)


def hf_flax_baseline(config, host_batch: dict[str, np.ndarray], *, steps: int, warmup_steps: int) -> dict:
    """Times transformers 4.x's FlaxBertForPreTraining with our optax optimizer, jitted, on one device."""
    transformers = import_baseline("hf_flax")
    dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else jnp.float32  # compute dtype; params stay f32
    model = transformers.FlaxBertForPreTraining(_hf_bert_config(config, transformers), seed=config.train.seed,
                                                dtype=dtype)
    optimizer = optim.make_optimizer(config.train)
    input_ids, labels = mlm_labels(host_batch["input_ids"], host_batch["attention_mask"],
                                   config.masking.max_predictions_per_seq, config.train.seed)
    batch = jax.device_put({"input_ids": input_ids, "segment_ids": host_batch["segment_ids"],
                            "attention_mask": host_batch["attention_mask"], "labels": labels,
                            "next_sentence_labels": host_batch["next_sentence_labels"]})

    def train_step(params, opt_state, key, batch):
        key, dropout_key = jax.random.split(key)

        def loss_fn(params):
            out = model(batch["input_ids"], batch["attention_mask"], batch["segment_ids"], params=params,
                        dropout_rng=dropout_key, train=True)
            weights = (batch["labels"] >= 0).astype(jnp.float32)  # [batch, seq]
            mlm = optax.softmax_cross_entropy_with_integer_labels(
                out.prediction_logits.astype(jnp.float32), jnp.maximum(batch["labels"], 0))  # [batch, seq]
            nsp = optax.softmax_cross_entropy_with_integer_labels(
                out.seq_relationship_logits.astype(jnp.float32), batch["next_sentence_labels"])  # [batch]
            return (mlm * weights).sum() / weights.sum() + nsp.mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, loss

    params = jax.device_put(model.params)
    carry = (params, optimizer.init(params), jax.random.key(config.train.seed))
    start = time.perf_counter()
    compiled = jax.jit(train_step, donate_argnums=(0, 1, 2)).lower(*carry, batch).compile()
    compile_seconds = time.perf_counter() - start
    holder = {"carry": carry}

    def run_step():
        *new_carry, loss = compiled(*holder["carry"], batch)
        holder["carry"] = tuple(new_carry)
        jax.block_until_ready((new_carry, loss))

    times = time_steps(run_step, steps, warmup_steps)
    device = jax.devices()[0]
    return _baseline_figures(config, "hf_flax", times, device_kind=device.device_kind, dtype=config.model.dtype,
                             peak_memory_bytes=None, compile_seconds=compile_seconds)


def _baseline_figures(config, name: str, times: list[float], *, device_kind: str, dtype: str,
                      peak_memory_bytes: int | None, **startup_seconds: float) -> dict:
    """`baseline_*` figures, credited with our model FLOPs (see the module docstring) on one device."""
    batch_size, seq_len = config.train.global_batch_size, config.data.max_seq_length
    figures = throughput(times, batch_size=batch_size, seq_len=seq_len, device_kind=device_kind, dtype=dtype,
                         flops_per_step=model_flops_per_step(config, batch_size, seq_len), num_devices=1)
    figures.update(name=name, device_kind=device_kind, dtype=dtype, **startup_seconds,
                   peak_memory_bytes=peak_memory_bytes,
                   hf_all_positions_flops_per_step=hf_all_positions_flops_per_step(config, batch_size, seq_len))
    return {f"baseline_{key}" if key != "name" else "baseline": value for key, value in figures.items()}
