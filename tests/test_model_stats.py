"""model_stats and the summary command: counts by part, FLOPs against XLA's own count, the JSON line."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bert_jax import config as config_lib
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import steps as steps_lib
from bert_jax.tools import model_stats

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(objective="mlm_nsp", **model):
    config = config_lib.default_config()
    config.model.update({"vocab_size": 1024, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                         "intermediate_size": 512, "max_position_embeddings": 128, **model})
    config.objective = objective
    config.data.max_seq_length = 128
    return config


def test_parts_add_up_to_the_real_model():
    for config in (_config(), _config("mlm"), _config("mlm_sop", embedding_size=32, num_hidden_groups=1),
                   _config("mlm_sbo")):
        parts = model_stats.parameter_breakdown(config)
        model = pretraining_heads.build_model(config, seed=0)
        assert parts["total_params"] == steps_lib.parameter_count(nnx.state(model, nnx.Param))
        assert parts["encoder_params"] + parts["head_params"] == parts["total_params"]
    assert model_stats.parameter_breakdown(_config("mlm"))["pair_head"] == 0


def test_flops_formula_matches_xla_cost_analysis():
    """The forward third of the formula against XLA's FLOP count of the real forward pass."""
    config = _config(num_hidden_layers=2)
    model = pretraining_heads.build_model(config, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    batch, seq, predictions = 8, 128, config.masking.max_predictions_per_seq
    ids = jnp.ones((batch, seq), jnp.int32)
    positions = jnp.tile(jnp.arange(predictions)[None], (batch, 1))
    forward = jax.jit(lambda p: nnx.merge(graphdef, p)(ids, ids * 0, ids, positions))
    xla_flops = forward.lower(params).compile().cost_analysis()["flops"]
    ours = model_stats.training_flops_per_token(config) * batch * seq / 3
    # XLA also counts softmax, LayerNorm, GELU and bias adds, which the model-FLOPs convention leaves out.
    assert 0.85 < ours / xla_flops < 1.02, (ours, xla_flops)


def test_flops_formula_matches_a_hand_count_of_every_matmul():
    """Each matmul of a training step of a tiny BERT counted by hand: 2 FLOPs per multiply-add, x3 for the
    backward pass (gradients with respect to the inputs and to the weights)."""
    config = _config(vocab_size=50, hidden_size=8, num_attention_heads=2, intermediate_size=16,
                     max_position_embeddings=16)
    config.data.max_seq_length = seq = 16
    config.masking.max_predictions_per_seq = predictions = 3
    hidden, layers, inter, vocab = 8, 2, 16, 50
    per_sequence_forward = (
        layers * (seq * hidden * hidden * 4  # query, key, value and output projections
                  + seq * hidden * inter * 2  # the two feed-forward matmuls
                  + seq * seq * hidden  # scores QK^T, summed over the heads (head_dim x heads = hidden)
                  + seq * seq * hidden)  # context PV
        + predictions * (hidden * hidden + hidden * vocab)  # MLM transform and vocabulary projection
        + hidden * hidden + hidden * 2)  # pooler and NSP classifier on [CLS]
    hand = 3 * 2 * per_sequence_forward / seq
    assert model_stats.training_flops_per_token(config, seq) == hand


def test_sbo_head_flops_are_a_hand_count_of_its_matmuls():
    """SpanBERT's head on the same P slots as the MLM head: [left; right; position] -> hidden -> hidden, then the
    tied vocabulary projection; objective 'mlm_sbo' has no pooler or pair head."""
    model = {"vocab_size": 50, "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16,
             "max_position_embeddings": 16, "sbo_position_embedding_size": 6}
    sbo, mlm = _config("mlm_sbo", **model), _config("mlm", **model)
    for config in (sbo, mlm):
        config.data.max_seq_length = 16
        config.masking.max_predictions_per_seq = 3
    per_sequence_forward = 3 * ((2 * 8 + 6) * 8 + 8 * 8 + 8 * 50)
    extra = model_stats.training_flops_per_token(sbo) - model_stats.training_flops_per_token(mlm)
    assert extra == pytest.approx(3 * 2 * per_sequence_forward / 16, rel=1e-12)
    assert model_stats.parameter_breakdown(sbo)["sbo_head"] == (
        15 * 6 + (2 * 8 + 6) * 8 + 8 + 2 * 8 + 8 * 8 + 8 + 2 * 8 + 50)


def test_memory_is_params_plus_two_adam_moments():
    memory = model_stats.memory_bytes(1000)
    assert memory == {"param_bytes": 4000, "optimizer_bytes": 8000, "param_and_optimizer_bytes": 12000}


def test_summary_command_prints_a_table_and_a_json_line():
    result = subprocess.run([sys.executable, "-m", "bert_jax.summary", "--config=configs/albert_base.py"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert any(line.strip().startswith("encoder layers") for line in lines)
    summary = json.loads(lines[-1])
    assert summary["config"].endswith("albert_base.py")
    assert summary["encoder_params"] == 11_683_584  # HF AlbertModel
    assert summary["total_params"] > summary["encoder_params"]
    assert np.isclose(summary["param_and_optimizer_bytes"], 12 * summary["total_params"])


def test_summary_names_an_untied_decoder():
    """NeoBERT's head holds its own vocabulary x width decoder: the table must not call it tied."""
    result = subprocess.run([sys.executable, "-m", "bert_jax.summary", "--config=configs/neobert.py"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    head = [line for line in result.stdout.splitlines() if line.strip().startswith("MLM head")]
    assert head and "own decoder" in head[0] and "tied" not in head[0]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["mlm_head"] > 30522 * 768  # the decoder table is counted in the head
