"""How a train step's cost grows with sequence length and model size: measured cells beside the FLOP and
memory models' predictions, and padded against packed rows of real text.

Time. predicted step seconds = model FLOPs per step / R, where R is the sustained model FLOP/s measured on
ONE reference cell (say bert_mini at seq 128). Model FLOPs are `benchmarking.model_flops_per_step`'s (3x the
forward matmuls, attention's 12 L S H per token included). measured / predicted > 1 where a cell runs
slower than its FLOPs say: small matmuls dominated by fixed overhead, attention's softmax and masks
growing as S^2 outside the matmul count, memory traffic; < 1 where bigger matmuls run nearer the peak.

Memory. predicted peak host bytes = B + 16 N + A, with
  B   the peak RSS of a process that imported jax and this library and ran one trivial program (measured);
  16N float32 parameters, gradients and AdamW's two moments, 4 bytes each, for N parameters;
  A   the activations the backward pass keeps, after Korthikanti et al. 2022 ("Reducing Activation
      Recomputation in Large Transformer Models", eq. 1): per layer s b (18 h + 4 i) + 5 a s^2 b bytes with
      16-bit activations and 1-byte dropout masks (their 34 s b h + 5 a s^2 b when i = 4 h), doubled for
      float32: A = 2 L [s b (18 h + 4 i) + 5 a s^2 b] + 8 b P V', the last term the MLM head's float32
      logits on the P gathered positions over the padded vocabulary V' and their gradient.
Left out: embeddings' outputs, the pooler, XLA's compile-time peak (which ru_maxrss includes) and the
allocator's slack; the ratio measured / predicted shows what they amount to. XLA's own figures of the
compiled step (argument + output - aliased + temp bytes) are recorded beside it.

Packing. Rows from the project's pipeline (`pipeline.iterator_from_config`) on real text, padded
(one sentence-pair instance per row) and packed (`config.data.pack_sequences`), timed on the real train
step; useful tokens are the non-padding ones, and instances/s are the sequences/s of useful tokens.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess

import jax
import numpy as np

from bert_jax import config as config_lib
from bert_jax.model import encoder, pretraining_heads
from bert_jax.tools import benchmarking, model_stats, sweep

STATE_BYTES_PER_PARAM = 16  # float32 parameter, gradient and AdamW's two moments


def cell_name(size: str, seq_len: int) -> str:
    return f"{size}@{seq_len}"


def parse_cell(name: str) -> tuple[str, int]:
    """'mini@128' -> ('mini', 128); anything else is an InputError."""
    size, _, seq = name.partition("@")
    if not size or not seq.isdigit() or int(seq) <= 0:
        raise config_lib.InputError(f"cell {name!r} is not SIZE@SEQ_LEN; write it as e.g. mini@128.")
    return size, int(seq)


def load_config(path: str, batch_size: int, seq_len: int, overrides: dict | None = None):
    """The validated config of one cell: the file, `max_position_embeddings` raised to `seq_len` where the file
    has fewer positions (bert_tiny has 128), then `overrides` ({'data.pack_sequences': True, ...})."""
    config = sweep.load_config_file(path)
    config.model.max_position_embeddings = max(config.model.max_position_embeddings, seq_len)
    config.update_from_flattened_dict(dict(overrides or {}))
    return benchmarking.prepare_config(config, batch_size, seq_len)


def attention_flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token of the attention scores and context (QK^T and PV): 12 L S H."""
    return model_stats.attention_flops_per_token(encoder.BertConfig.from_config(config.model), seq_len)


def attention_flop_share(config, seq_len: int) -> float:
    return attention_flops_per_token(config, seq_len) / model_stats.training_flops_per_token(config, seq_len)


def state_bytes(num_params: int) -> int:
    """Parameters, gradients and AdamW's two moments in float32."""
    return STATE_BYTES_PER_PARAM * num_params


def activation_bytes(config, batch_size: int, seq_len: int) -> int:
    """A of the module docstring: the float32 activations the backward pass keeps."""
    m = config.model
    s, b, h, i, a = seq_len, batch_size, m.hidden_size, m.intermediate_size, m.num_attention_heads
    per_layer_16bit = s * b * (18 * h + 4 * i) + 5 * a * s * s * b
    predictions = min(config.masking.max_predictions_per_seq, seq_len)
    vocab = pretraining_heads.padded_vocab_size(m.vocab_size, m.vocab_pad_multiple)
    return 2 * m.num_hidden_layers * per_layer_16bit + 8 * b * predictions * vocab


def model_figures(config) -> dict:
    """What the models say of one cell before it runs: FLOPs, attention's share, parameters, state and
    activation bytes."""
    batch_size, seq_len = config.train.global_batch_size, config.data.max_seq_length
    num_params = model_stats.parameter_breakdown(config)["total_params"]
    return {"num_params": num_params,
            "model_flops_per_step": benchmarking.model_flops_per_step(config, batch_size, seq_len),
            "attention_flop_share": attention_flop_share(config, seq_len),
            "predicted_state_bytes": state_bytes(num_params),
            "predicted_activation_bytes": activation_bytes(config, batch_size, seq_len)}


def baseline_figures() -> dict:
    """B of the module docstring: the peak RSS of this process once jax has run one trivial program."""
    jax.block_until_ready(jax.jit(lambda x: x + 1)(np.zeros(8, np.float32)))
    return {"kind": "baseline", "peak_rss_bytes": benchmarking.host_peak_rss()}


def measure_cell(config, *, steps: int, warmup_steps: int, min_seconds: float, max_steps: int,
                 host_batches=None, tokenizer=None) -> dict:
    """One cell: the real compiled train step timed adaptively, peak RSS, XLA's figures, and the models'."""
    result = benchmarking.benchmark_train_step(config, steps=steps, warmup_steps=warmup_steps,
                                               host_batches=host_batches, tokenizer=tokenizer,
                                               min_seconds=min_seconds, max_steps=max_steps)
    result["peak_rss_bytes"] = benchmarking.host_peak_rss()
    result.update(model_figures(config))
    result["switches"] = benchmarking.switches(config)
    return result


def packing_max_predictions(config, seq_len: int) -> int:
    """max_predictions_per_seq for both arms of the packing comparison: the config's, raised to what a full
    packed row needs (`config.validate` requires it when packing) so both arms mask at the same rate."""
    return max(config.masking.max_predictions_per_seq, round((seq_len - 3) * config.masking.mask_rate))


def real_text_batches(config, workdir: str, num_batches: int):
    """(tokenizer, `num_batches` host batches) from the project's pipeline on `config.data.corpus` (the
    embedded default when empty), corpus and tokenizer cached in `workdir` as training caches them."""
    # lazy: the corpus readers are only needed here
    from bert_jax.data import corpus as corpus_lib
    from bert_jax.data import pipeline

    tokenizer, sources = corpus_lib.prepare_default_or_given(config.data, workdir)
    iterator = pipeline.iterator_from_config(config, sources["train"], tokenizer.special_ids,
                                             config.train.global_batch_size, process_index=0, process_count=1,
                                             num_workers=0)
    batches = [{key: np.asarray(value) for key, value in next(iterator).items()} for _ in range(num_batches)]
    getattr(iterator, "close", lambda: None)()  # no prefetching thread competes with the timed steps
    return tokenizer, batches


def prepare_text(config, workdir: str) -> dict:
    """Builds the corpus, tokenizer and tokenized splits in `workdir` once, before the cells reuse them."""
    from bert_jax.data import corpus as corpus_lib

    tokenizer, _ = corpus_lib.prepare_locked(config.data, workdir)
    return {"kind": "prepare", "tokenizer_pieces": tokenizer.vocab_size, "workdir": workdir}


def add_predictions(cells: list[dict], reference: str, baseline_rss_bytes: int) -> dict:
    """Fills each grid cell's predictions and ratios in place; returns the reference figures.

    R = the reference cell's model FLOPs per step / its median step time; predicted_step_s = FLOPs / R;
    predicted_peak_bytes = baseline + state + activations; each *_ratio is measured / predicted.
    """
    by_name = {cell["cell"]: cell for cell in cells}
    if reference not in by_name:
        raise config_lib.InputError(f"--reference={reference} is not one of the measured cells {sorted(by_name)}; "
                                    "name a cell of the grid.")
    ref = by_name[reference]
    rate = ref["model_flops_per_step"] / ref["step_time_median_s"]
    for cell in cells:
        cell["reference_cell"], cell["reference_flops_per_second"] = reference, rate
        cell["predicted_step_s"] = cell["model_flops_per_step"] / rate
        cell["step_ratio"] = cell["step_time_median_s"] / cell["predicted_step_s"]
        cell["baseline_rss_bytes"] = baseline_rss_bytes
        cell["predicted_peak_bytes"] = (baseline_rss_bytes + cell["predicted_state_bytes"]
                                        + cell["predicted_activation_bytes"])
        cell["memory_ratio"] = cell["peak_rss_bytes"] / cell["predicted_peak_bytes"]
    return {"reference_cell": reference, "reference_flops_per_second": rate, "baseline_rss_bytes": baseline_rss_bytes}


def pair_packing(cells: list[dict]) -> list[tuple[dict, dict]]:
    """(padded, packed) cells of the same size and length, in the order measured; each packed cell gets
    `packed_over_padded_instances` (its instances/s over the padded one's) and the same for useful tokens/s."""
    padded = {cell["cell"]: cell for cell in cells if not cell["pack_sequences"]}
    pairs = []
    for cell in cells:
        if cell["pack_sequences"] and cell["cell"] in padded:
            base = padded[cell["cell"]]
            cell["packed_over_padded_instances"] = cell["instances_per_second"] / base["instances_per_second"]
            cell["packed_over_padded_tokens"] = cell["real_tokens_per_second"] / base["real_tokens_per_second"]
            pairs.append((base, cell))
    return pairs


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"


def grid_markdown(cells: list[dict]) -> str:
    """The cost table: one row per size and length, measured beside predicted."""
    header = ("| cell | params | GFLOP / step | attention share | step ms measured / predicted | ratio "
              "| peak RSS MiB measured / predicted | ratio | RSS after compile MiB | XLA arg+out-alias+temp MiB "
              "| compile s | timed steps |")
    lines = [header, "|---" * header.count(" | ") + "|---|"]
    for c in cells:
        lines.append(
            f"| {c['cell']} | {c['num_params'] / 1e6:,.1f}M | {c['model_flops_per_step'] / 1e9:,.1f} "
            f"| {100 * c['attention_flop_share']:.0f}% | {1e3 * c['step_time_median_s']:,.0f} / "
            f"{1e3 * c['predicted_step_s']:,.0f} | {c['step_ratio']:.2f} | {_mib(c['peak_rss_bytes'])} / "
            f"{_mib(c['predicted_peak_bytes'])} | {c['memory_ratio']:.2f} "
            f"| {_mib(c['host_peak_rss_after_compile_bytes'])} | {_mib(c['xla_total_bytes'])} "
            f"| {c['compile_seconds']:.1f} | {c['steps']} |")
    return "\n".join(lines)


def packing_markdown(pairs: list[tuple[dict, dict]]) -> str:
    """Padded against packed rows of real text, one row per arm."""
    header = ("| cell | rows | useful tokens | instances / row | step ms | rows/s | instances/s | useful tokens/s "
              "| packed / padded (instances/s) |")
    lines = [header, "|---" * header.count(" | ") + "|---|"]
    for padded, packed in pairs:
        for cell in (padded, packed):
            rows = (f"packed (K={cell['max_instances_per_pack']})" if cell["pack_sequences"] else "padded")
            gain = f"**{cell['packed_over_padded_instances']:.2f}x**" if cell["pack_sequences"] else ""
            lines.append(
                f"| {cell['cell']} | {rows} | {100 * cell['real_token_fraction']:.0f}% "
                f"| {cell['instances_per_second'] / cell['sequences_per_second']:.2f} "
                f"| {1e3 * cell['step_time_median_s']:,.0f} | {cell['sequences_per_second']:,.2f} "
                f"| {cell['instances_per_second']:,.2f} | {cell['real_tokens_per_second']:,.0f} | {gain} |")
    return "\n".join(lines)


def machine() -> str:
    """'<CPU model>, N cores' from lscpu (or /proc/cpuinfo), for the table's header."""
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False, timeout=10).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    except OSError:
        pass
    if not model and os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    return f"{model or platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores"


def environment(command: str) -> dict:
    """What was run, when, with which versions, on which machine: the first JSON line of a table."""
    import flax

    return {"kind": "run", "command": command, "date": datetime.date.today().isoformat(),
            "jax_version": jax.__version__, "flax_version": flax.__version__,
            "python_version": platform.python_version(), "machine": machine(),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}


def header_markdown(run: dict) -> str:
    return (f"Command: `{run['command']}`\n\nDate: {run['date']}; jax {run['jax_version']}, flax {run['flax_version']}, "
            f"Python {run['python_version']}; machine: {run['machine']}; GLIBC_TUNABLES={run['glibc_tunables']!r}.")
