"""The benchmark command: figures and JSON line, MFU from the peaks table, pipeline rate, HF baselines."""

import importlib.util
import json
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_documents, write_corpus

from bert_jax import benchmark_report
from bert_jax import config as config_lib
from bert_jax.tools import benchmarking, model_stats

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH, SEQ = 8, 32
TINY = ["--config=configs/bert_tiny.py", "--config.model.hidden_size=64", "--config.model.intermediate_size=128",
        "--config.model.vocab_size=512", f"--batch_size={BATCH}", f"--seq_len={SEQ}", "--steps=3", "--warmup_steps=1"]
KEYS = ("config", "batch_size", "seq_len", "steps", "device_kind", "num_devices", "dtype", "compile_seconds",
        "step_time_median_s", "step_time_p90_s", "sequences_per_second", "tokens_per_second", "model_flops_per_step",
        "achieved_tflops", "mfu", "peak_memory_bytes", "memory_source")


def _benchmark(*args):
    """Runs the command; returns (stdout, the JSON object of its last line)."""
    result = subprocess.run([sys.executable, "-m", "bert_jax.benchmark", *TINY, *args], cwd=ROOT, check=False,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads(result.stdout.strip().splitlines()[-1])


def _tiny_config(tokenizer_vocab_size=512):
    spec = importlib.util.spec_from_file_location("bert_tiny", ROOT / "configs" / "bert_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.model.update({"hidden_size": 64, "intermediate_size": 128, "vocab_size": 512})
    config.data.tokenizer_vocab_size = tokenizer_vocab_size
    return benchmarking.prepare_config(config, BATCH, SEQ)


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """One run with --input_pipeline on a small generated corpus and a 300-piece tokenizer."""
    corpus = write_corpus(tmp_path_factory.mktemp("text") / "corpus.txt", make_documents(60, seed=0))
    return _benchmark("--input_pipeline", "--pipeline_seconds=1", f"--config.data.corpus={corpus}",
                      "--config.data.tokenizer_vocab_size=300", "--config.data.num_workers=1",
                      f"--workdir={tmp_path_factory.mktemp('work')}")


def test_peaks_table_gives_mfu_for_known_devices():
    assert benchmarking.model_flops_utilization(494.5e12, "NVIDIA H100 80GB HBM3", "bfloat16") == pytest.approx(0.5)
    assert benchmarking.model_flops_utilization(378e12, "NVIDIA H100 PCIe", "bfloat16") == pytest.approx(0.5)
    assert benchmarking.model_flops_utilization(247.25e12, "NVIDIA H100 80GB HBM3", "float32") == pytest.approx(0.5)
    assert benchmarking.model_flops_utilization(989e12, "NVIDIA H200", "bfloat16", num_devices=8) == pytest.approx(1 / 8)
    assert benchmarking.model_flops_utilization(156e12, "NVIDIA A100-SXM4-80GB", "bfloat16") == pytest.approx(0.5)
    assert benchmarking.peak_flops_per_second("TPU v5 lite", "bfloat16") == 197e12  # v5e, not v5p
    assert benchmarking.peak_flops_per_second("TPU v5", "bfloat16") == 459e12
    assert benchmarking.peak_flops_per_second("TPU v6 lite", "bfloat16") == 918e12
    assert benchmarking.peak_flops_per_second("TPU v4", "bfloat16") == 275e12
    for unknown in ("cpu", "NVIDIA H100 NVL", "Some Future Chip"):
        assert benchmarking.model_flops_utilization(1e12, unknown, "bfloat16") is None


def test_json_line_has_every_figure(pipeline_run):
    stdout, result = pipeline_run
    assert all(key in result for key in KEYS), sorted(set(KEYS) - set(result))
    assert result["config"] == "configs/bert_tiny.py" and result["steps"] == 3
    assert (result["batch_size"], result["seq_len"], result["dtype"]) == (BATCH, SEQ, "float32")
    assert result["device_kind"] == "cpu" and result["num_devices"] >= 1 and result["mfu"] is None
    assert 0 < result["step_time_median_s"] <= result["step_time_p90_s"] and result["compile_seconds"] > 0
    assert result["sequences_per_second"] == pytest.approx(BATCH / result["step_time_median_s"], rel=1e-9)
    assert result["tokens_per_second"] == pytest.approx(SEQ * result["sequences_per_second"], rel=1e-9)
    flops = model_stats.training_flops_per_token(_tiny_config(300), SEQ) * BATCH * SEQ
    assert result["model_flops_per_step"] == flops  # exactly the documented formula
    assert result["achieved_tflops"] == pytest.approx(flops / result["step_time_median_s"] / 1e12, rel=1e-9)
    assert result["peak_memory_bytes"] > 50 * 2**20 and result["memory_source"] == "host_peak_rss"
    assert "GFLOP/s, no MFU on CPU" in stdout and "(host peak RSS)" in stdout


def test_input_pipeline_reports_positive_throughput(pipeline_run):
    stdout, result = pipeline_run
    assert result["pipeline_sequences_per_second_in_process"] > 0
    assert result["pipeline_num_workers"] == 1 and result["pipeline_sequences_per_second_workers"] > 0
    best = max(result["pipeline_sequences_per_second_in_process"], result["pipeline_sequences_per_second_workers"])
    assert result["pipeline_over_device"] == pytest.approx(best / result["sequences_per_second"], rel=1e-9)
    assert "best pipeline / device rate" in stdout


def test_hf_torch_baseline_runs_and_prints_a_ratio(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    results = tmp_path / "results.jsonl"
    stdout, result = _benchmark("--config.data.tokenizer_vocab_size=512", "--baseline=hf_torch",
                                "--xla_flag_sets=latency_hiding", f"--append_to={results}",
                                "--config.model.scan_layers=true")
    # The named XLA flag set reached the backend's flags, and the switches are recorded with the result.
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" in result["xla_flags"]
    assert result["xla_flag_sets"] == "latency_hiding" and result["switches"]["model.scan_layers"] is True
    assert json.loads(results.read_text()) == result
    table = benchmark_report.markdown_table(benchmark_report.read_results([str(results)]))
    assert "scan_layers=True, xla: latency_hiding" in table and f"**{result['ours_over_baseline']:.2f}x**" in table
    assert result["baseline"] == "hf_torch" and result["baseline_dtype"] == "float32"
    assert result["baseline_step_time_median_s"] > 0
    assert result["baseline_sequences_per_second"] == pytest.approx(BATCH / result["baseline_step_time_median_s"])
    assert result["ours_over_baseline"] == pytest.approx(
        result["sequences_per_second"] / result["baseline_sequences_per_second"])
    assert result["baseline_hf_all_positions_flops_per_step"] > result["model_flops_per_step"]
    assert "ours / baseline throughput" in stdout


def test_hf_flax_baseline_runs_with_transformers_4_or_says_how_to_get_it():
    try:
        benchmarking.import_baseline("hf_flax")
    except benchmarking.BaselineUnavailable as e:  # transformers 5 (this project's environment)
        assert "transformers==4.57.6 in a separate virtual environment" in str(e)
        return
    stdout, result = _benchmark("--config.data.tokenizer_vocab_size=512", "--baseline=hf_flax")
    assert result["baseline"] == "hf_flax" and result["baseline_compile_seconds"] > 0
    assert result["ours_over_baseline"] == pytest.approx(
        result["sequences_per_second"] / result["baseline_sequences_per_second"])
    assert "ours / baseline throughput" in stdout


def test_synthetic_batch_is_a_sentence_pair_with_optional_padding():
    batch = benchmarking.synthetic_batch(4, 32, 100, padding_fraction=0.25, seed=1)
    ids = batch["input_ids"]
    assert ids.shape == (4, 32) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids[:, [0, 12, 23]], [[2, 3, 3]] * 4)  # 24 real tokens, split at 12
    assert (ids[:, 24:] == 0).all() and (batch["attention_mask"][:, 24:] == 0).all()
    assert (batch["attention_mask"][:, :24] == 1).all()
    others = np.delete(ids[:, :24], [0, 12, 23], axis=1)
    assert others.min() >= 5 and others.max() < 100
    np.testing.assert_array_equal(batch["segment_ids"][0], [0] * 13 + [1] * 11 + [0] * 8)
    assert set(np.unique(batch["next_sentence_labels"])) <= {0, 1} and batch["mask_seeds"].shape == (4,)
    full = benchmarking.synthetic_batch(2, 16, 100)
    assert full["attention_mask"].all() and full["input_ids"][0, 15] == 3


def test_mlm_labels_mark_about_15_percent_of_real_tokens():
    batch = benchmarking.synthetic_batch(3, 128, 1000, padding_fraction=0.5)
    masked, labels = benchmarking.mlm_labels(batch["input_ids"], batch["attention_mask"], max_predictions=20)
    chosen = labels != -100
    np.testing.assert_array_equal(chosen.sum(axis=1), [9, 9, 9])  # round(0.15 * 61 maskable tokens)
    np.testing.assert_array_equal(labels[chosen], batch["input_ids"][chosen])
    assert (masked[chosen] == 4).all() and (masked[~chosen] == batch["input_ids"][~chosen]).all()
    assert not chosen[:, 64:].any()  # never padding
    capped, _ = benchmarking.mlm_labels(batch["input_ids"], batch["attention_mask"], max_predictions=4)
    assert ((capped == 4).sum(axis=1) == 4).all()


def test_unknown_xla_flag_set_and_bad_results_file_are_clear_errors(tmp_path):
    with pytest.raises(config_lib.InputError, match="unknown set.*'fast'.*latency_hiding"):
        benchmarking.xla_flags(["latency_hiding", "fast"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"config": 1}\nnot json\n')
    with pytest.raises(config_lib.InputError, match="bad.jsonl line 2 is not a JSON object"):
        benchmark_report.read_results([str(bad)])
    with pytest.raises(config_lib.InputError, match="cannot read"):
        benchmark_report.read_results([str(tmp_path / "missing.jsonl")])


def test_sequence_longer_than_positions_is_a_clear_error():
    with pytest.raises(config_lib.InputError, match="max_position_embeddings"):
        benchmarking.prepare_config(_tiny_config(), BATCH, 256)  # bert_tiny has 128 positions


def test_hf_torch_baseline_refuses_another_optimizer_than_adamw():
    config = _tiny_config()
    config.train.optimizer = "lamb"
    with pytest.raises(config_lib.InputError, match=r"hf_torch baseline steps with torch's AdamW.*optimizer='lamb'"):
        benchmarking.check_baseline(config, "hf_torch")


def test_the_benchmark_imports_without_the_corpus_readers():
    """The GPU image lacks tensorflow_datasets and tensorboardX (benchmarks/download_wheels.sh ships neither):
    the benchmark commands must import without them; only --input_pipeline loads the corpus readers."""
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('tensorflow_datasets', 'tensorboardX', 'tensorflow'):\n"
               "            raise ImportError('blocked ' + name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "import bert_jax.benchmark, bert_jax.benchmark_sweep\n"
               "print('imported')\n")
    result = subprocess.run([sys.executable, "-c", blocker], cwd=ROOT, check=False, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "imported" in result.stdout, result.stderr[-3000:]


def test_adaptive_timing_runs_at_least_the_steps_and_the_seconds_and_at_most_max_steps():
    calls = []

    def run_step():
        calls.append(1)
        time.sleep(0.01)

    assert len(benchmarking.time_steps(run_step, 2, 1)) == 2 and len(calls) == 3
    times = benchmarking.time_steps(run_step, 2, 0, min_seconds=0.08, max_steps=50)
    assert sum(times[:-1]) < 0.08 <= sum(times) and len(times) >= 2
    assert len(benchmarking.time_steps(run_step, 2, 0, min_seconds=10.0, max_steps=4)) == 4


def test_batch_figures_count_instances_and_real_tokens():
    packed = benchmarking.synthetic_packed_batch(4, 64, 512, max_instances_per_pack=2, padding_fraction=0.25)
    packed["pair_weights"][0, 1] = 0.0  # an empty slot is no instance
    plain = benchmarking.synthetic_batch(4, 64, 512, padding_fraction=0.5)
    figures = benchmarking.batch_figures([packed, plain])
    assert figures["instances_per_batch"] == (7 + 4) / 2
    real = np.count_nonzero(packed["attention_mask"]) + 4 * 32
    assert figures["real_tokens_per_batch"] == real / 2 and figures["real_token_fraction"] == real / (2 * 4 * 64)


def test_compiled_figures_see_donated_buffers_as_aliased():
    x = jnp.ones((256, 256), jnp.float32)
    compiled = jax.jit(lambda a: a * 2 + 1, donate_argnums=0).lower(x).compile()
    figures = benchmarking.compiled_figures(compiled)
    assert figures["xla_argument_bytes"] == figures["xla_output_bytes"] == figures["xla_alias_bytes"] == 256 * 256 * 4
    assert figures["xla_total_bytes"] == 256 * 256 * 4 + figures["xla_temp_bytes"]
    assert figures["xla_flops"] == pytest.approx(2 * 256 * 256, rel=0.01)
