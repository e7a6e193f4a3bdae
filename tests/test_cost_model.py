"""cost_model and benchmarks/cost_table.py: the memory and FLOP models against hand counts, the predictions
and ratios of the table, pipeline rows of text, and the dry run end to end."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_documents, write_corpus

from bert_jax import config as config_lib
from bert_jax.tools import cost_model, model_stats

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZES = {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 256, "max_position_embeddings": 64}


def _config(seq_len=64, batch_size=4, **model):
    config = config_lib.default_config()
    config.model.update({**SIZES, **model})
    config.data.tokenizer_vocab_size = 1000
    config.data.max_seq_length, config.train.global_batch_size = seq_len, batch_size
    return config_lib.validate(config)


def test_state_is_16_bytes_per_hand_counted_parameter():
    """BertForPreTraining's parameters counted by hand (tied decoder: only its bias), x (param, grad, m, v) x 4 B."""
    v, h, i, layers, positions, types = 1000, 64, 256, 2, 64, 2
    embeddings = v * h + positions * h + types * h + 2 * h
    layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    heads = (h * h + h) + (h * h + h + 2 * h + v) + (2 * h + 2)  # pooler, MLM transform + LayerNorm + bias, NSP
    hand = embeddings + layers * layer + heads
    figures = cost_model.model_figures(_config())
    assert figures["num_params"] == hand
    assert figures["predicted_state_bytes"] == 4 * (1 + 1 + 2) * hand


def test_activations_are_korthikanti_tensors_in_float32():
    """Korthikanti et al.'s saved tensors, one by one (16-bit values, 1-byte dropout masks), doubled for float32,
    plus the MLM logits and their gradient on the gathered positions over the padded vocabulary."""
    s, b, h, a, i, layers = 64, 4, 64, 4, 256, 2
    attention = [2 * s * b * h,  # QKV projection input
                 2 * s * b * h, 2 * s * b * h,  # Q and K for QK^T
                 2 * a * s * s * b, a * s * s * b,  # softmax output, its dropout mask
                 2 * a * s * s * b, 2 * s * b * h,  # dropped-out probabilities and V for PV
                 2 * s * b * h, s * b * h]  # output projection input, its dropout mask
    mlp = [2 * s * b * h, 2 * s * b * i, 2 * s * b * i, s * b * h]  # first matmul, GELU, second matmul inputs; mask
    layer_norms = [2 * s * b * h, 2 * s * b * h]
    per_layer = sum(attention) + sum(mlp) + sum(layer_norms)
    assert per_layer == s * b * h * (34 + 5 * a * s / h)  # the paper's closed form, with i = 4 h
    logits = 2 * 4 * b * 20 * 1024  # 20 predictions, vocabulary 1000 padded to a multiple of 128
    assert cost_model.activation_bytes(_config(), b, s) == 2 * layers * per_layer + logits


def test_attention_flops_are_a_count_of_the_two_matmuls():
    """QK^T ([s, d] x [d, s]) and PV ([s, s] x [s, d]) per head, 2 FLOPs a multiply-add, x3 for training."""
    config = _config()
    seq, heads, head_dim, layers = 64, 4, 16, 2
    shapes = [((seq, head_dim), (head_dim, seq)), ((seq, seq), (seq, head_dim))]
    forward = layers * heads * sum(2 * x[0] * x[1] * y[1] for x, y in shapes)
    assert cost_model.attention_flops_per_token(config, seq) == 3 * forward / seq
    share = cost_model.attention_flop_share(config, seq)
    assert share == pytest.approx(3 * forward / seq / model_stats.training_flops_per_token(config, seq))
    assert 0 < cost_model.attention_flop_share(config, 32) < share < 1  # grows with the length


def _cell(name, flops, seconds, peak, state=10, activations=5):
    return {"cell": name, "model_flops_per_step": flops, "step_time_median_s": seconds, "peak_rss_bytes": peak,
            "predicted_state_bytes": state, "predicted_activation_bytes": activations, "num_params": 1e6,
            "attention_flop_share": 0.1, "host_peak_rss_after_compile_bytes": peak, "xla_total_bytes": None,
            "compile_seconds": 1.0, "steps": 3}


def test_predictions_come_from_the_reference_rate_and_the_memory_formula():
    cells = [_cell("mini@128", 100e9, 1.0, 230), _cell("base@512", 300e9, 4.5, 115)]
    figures = cost_model.add_predictions(cells, "mini@128", baseline_rss_bytes=100)
    assert figures["reference_flops_per_second"] == 100e9
    assert cells[0]["step_ratio"] == 1.0
    assert cells[1]["predicted_step_s"] == pytest.approx(3.0) and cells[1]["step_ratio"] == pytest.approx(1.5)
    assert cells[0]["predicted_peak_bytes"] == 115 and cells[0]["memory_ratio"] == 2.0
    table = cost_model.grid_markdown(cells)
    assert "| base@512 |" in table and "4,500 / 3,000 | 1.50 |" in table
    with pytest.raises(config_lib.InputError, match="small@128"):
        cost_model.add_predictions(cells, "small@128", baseline_rss_bytes=100)


def test_packing_pairs_compare_instances_and_useful_tokens():
    def arm(pack, rows_per_second, instances_per_second, tokens_per_second):
        return {"cell": "mini@128", "pack_sequences": pack, "max_instances_per_pack": 3, "real_token_fraction": 0.5,
                "sequences_per_second": rows_per_second, "instances_per_second": instances_per_second,
                "real_tokens_per_second": tokens_per_second, "step_time_median_s": 1.0}
    padded, packed = arm(False, 8, 8, 500), arm(True, 8, 20, 1000)
    pairs = cost_model.pair_packing([padded, packed])
    assert pairs == [(padded, packed)]
    assert packed["packed_over_padded_instances"] == 2.5 and packed["packed_over_padded_tokens"] == 2.0
    assert "**2.50x**" in cost_model.packing_markdown(pairs)


def test_bad_cell_names_and_packing_predictions():
    assert cost_model.parse_cell("base@512") == ("base", 512)
    for bad in ("base", "base@", "@128", "base@x"):
        with pytest.raises(config_lib.InputError, match="SIZE@SEQ_LEN"):
            cost_model.parse_cell(bad)
    config = _config()
    assert cost_model.packing_max_predictions(config, 128) == 20  # the default already covers 15% of 125
    assert cost_model.packing_max_predictions(config, 512) == 76  # MLPerf's figure at 512


def test_pipeline_rows_pack_more_instances_per_row(tmp_path):
    """Both arms come from the project's pipeline; packed rows hold more instances and fewer pad tokens."""
    from bert_jax.tools import benchmarking

    corpus = write_corpus(tmp_path / "corpus.txt", make_documents(40, seed=1))
    figures = {}
    for pack in (False, True):
        config = _config(seq_len=128, batch_size=4, max_position_embeddings=128)
        config.data.corpus, config.data.tokenizer_vocab_size, config.data.pack_sequences = corpus, 300, pack
        _, batches = cost_model.real_text_batches(config_lib.validate(config), str(tmp_path / "work"), 3)
        assert len(batches) == 3 and batches[0]["input_ids"].shape == (4, 128)
        assert ("pair_weights" in batches[0]) == pack
        figures[pack] = benchmarking.batch_figures(batches)
    assert figures[False]["instances_per_batch"] == 4
    assert figures[True]["instances_per_batch"] > 4
    assert figures[True]["real_token_fraction"] > figures[False]["real_token_fraction"]
    padded_tokens = figures[False]["real_tokens_per_batch"]
    assert padded_tokens == pytest.approx(figures[False]["real_token_fraction"] * 4 * 128)


GRID_KEYS = ("cell", "size", "seq_len", "batch_size", "steps", "step_time_median_s", "step_times_s",
             "model_flops_per_step", "attention_flop_share", "num_params", "peak_rss_bytes",
             "host_peak_rss_after_compile_bytes", "xla_argument_bytes", "xla_output_bytes", "xla_alias_bytes",
             "xla_temp_bytes", "xla_total_bytes", "predicted_state_bytes", "predicted_activation_bytes",
             "baseline_rss_bytes", "predicted_peak_bytes", "memory_ratio", "reference_cell",
             "reference_flops_per_second", "predicted_step_s", "step_ratio", "compile_seconds", "switches")
PACKING_KEYS = ("cell", "pack_sequences", "max_instances_per_pack", "max_predictions_per_seq", "real_token_fraction",
                "step_time_median_s", "sequences_per_second", "instances_per_second", "real_tokens_per_second")


@pytest.mark.slow
def test_dry_run_writes_every_field(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", make_documents(80, seed=2))
    out, markdown = tmp_path / "cost.jsonl", tmp_path / "cost.md"
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": str(ROOT)}  # one CPU device, as a user runs it
    result = subprocess.run(
        [sys.executable, "benchmarks/cost_table.py", "--dry_run", f"--corpus={corpus}", f"--out={out}",
         f"--markdown={markdown}", f"--workdir={tmp_path / 'work'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds == ["run", "baseline", "grid", "grid", "packing", "packing", "packing", "packing"]
    run = records[0]
    assert {"command", "date", "jax_version", "flax_version", "python_version", "machine"} <= set(run)
    assert records[1]["peak_rss_bytes"] > 0
    grid = records[2:4]
    for cell in grid:
        assert set(GRID_KEYS) <= set(cell), set(GRID_KEYS) - set(cell)
        assert cell["peak_rss_bytes"] >= cell["host_peak_rss_after_compile_bytes"] > records[1]["peak_rss_bytes"] / 2
    assert [c["cell"] for c in grid] == ["tiny@32", "tiny@64"] and grid[0]["step_ratio"] == 1.0
    packing = records[4:]
    for cell in packing:
        assert set(PACKING_KEYS) <= set(cell), set(PACKING_KEYS) - set(cell)
    assert [c["pack_sequences"] for c in packing] == [False, True, False, True]
    assert all("packed_over_padded_instances" in c for c in packing if c["pack_sequences"])
    text = markdown.read_text()
    assert "| tiny@64 |" in text and "packed (K=3)" in text and "jax " in text and result.stdout.strip()
    assert np.isfinite([c["memory_ratio"] for c in grid]).all()


def test_bad_flags_are_one_line_errors_before_any_cell_runs():
    for flag, message in (("--sizes=huge", "no config configs/bert_huge.py"),
                          ("--reference=mini@100", "is not a cell of the grid"),
                          ("--packing_cells=mini", "is not SIZE@SEQ_LEN"),
                          ("--corpus=/no/such/text", "no text files match --corpus"),
                          ("--batch_size=0", "--batch_size must be positive")):
        result = subprocess.run([sys.executable, "benchmarks/cost_table.py", flag], cwd=ROOT, capture_output=True,
                                text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode != 0 and "baseline process" not in result.stdout
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and message in result.stderr
