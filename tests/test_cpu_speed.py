"""The CPU speed levers: bf16 matmuls with float32 sums (loss within 2e-2 of float32), fused QKV (the
unfused results to ~1e-6), a cheaper dropout PRNG (same masks, working and resumable dropout), and the
commands' one restart with glibc's huge-page malloc."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from test_steps import build, synthetic_batch, tiny_config

from bert_jax import cli
from bert_jax.model import encoder
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _bf16(x: np.ndarray) -> np.ndarray:
    """x rounded to bf16 (round to nearest even), as float64."""
    return np.asarray(jnp.asarray(x, jnp.float32).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


def test_bf16_matmul_and_its_gradients_match_float64_on_rounded_operands():
    rng = np.random.default_rng(0)
    x, kernel = rng.normal(size=(3, 5, 24)).astype(np.float32), rng.normal(size=(24, 7)).astype(np.float32)
    cotangent = rng.normal(size=(3, 5, 7)).astype(np.float32)
    out, vjp = jax.vjp(encoder.bf16_matmul, x, kernel)
    x_grad, kernel_grad = vjp(jnp.asarray(cotangent))
    assert out.dtype == x_grad.dtype == kernel_grad.dtype == jnp.float32
    np.testing.assert_allclose(out, _bf16(x) @ _bf16(kernel), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x_grad, _bf16(cotangent) @ _bf16(kernel).T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kernel_grad, np.einsum("bsi,bso->io", _bf16(x), _bf16(cotangent)), rtol=1e-5,
                               atol=1e-5)
    assert np.abs(np.asarray(out) - x @ kernel).max() > 1e-4  # the operands really were rounded
    # The MLM head's form, x @ embedding.T with the embedding [out, in] as stored: the same figures.
    out_t, vjp_t = jax.vjp(lambda x, e: encoder.bf16_matmul(x, e, transposed=True), x, kernel.T)
    x_grad_t, embedding_grad = vjp_t(jnp.asarray(cotangent))
    np.testing.assert_allclose(out_t, out, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x_grad_t, x_grad, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(embedding_grad, np.asarray(kernel_grad).T, rtol=1e-6, atol=1e-6)


@functools.cache
def _initial_state():
    """A one-layer tiny model's first TrainState on the host: every run below starts from it (none of the
    switches changes the parameter tree), which saves compiling the initialisation per run."""
    _, state, _ = build(_one_layer(tiny_config()), 1)
    return jax.device_get(state)


def _one_layer(config):
    config.model.num_hidden_layers = 1  # compile time is most of these tests' cost
    return config


def _losses(config, batches, steps=3):
    """(losses of `steps` train steps, the state after them, the compiled step, the mesh) for `config`."""
    config = _one_layer(config)
    config.mesh.data = 1
    mesh = parallel.make_mesh(config.mesh)
    setup, _ = steps_lib.make_pretraining_setup(config, mesh)
    state = jax.device_put(_initial_state(), setup.state_sharding)
    batch = parallel.to_global_batch(batches[0], parallel.batch_sharding(mesh))
    step = steps_lib.make_train_step(setup, mesh, config.train).lower(state, batch).compile(
        compiler_options=_QUICK_COMPILE)  # tiny programs: LLVM's expensive passes are not worth it
    losses = []
    for batch in batches[:steps]:
        state, metrics = step(state, parallel.to_global_batch(batch, parallel.batch_sharding(mesh)))
        losses.append(float(metrics["loss"]))
    return np.asarray(losses), state, step, mesh


def test_bf16_matmuls_keep_the_train_loss_within_2e_2_of_float32():
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(rng) for _ in range(3)]
    reference, *_ = _losses(tiny_config(), batches)
    config = tiny_config()
    config.model.matmul_dtype = "bfloat16"
    bf16, *_ = _losses(config, batches)
    np.testing.assert_allclose(bf16, reference, rtol=2e-2)
    assert not np.array_equal(bf16, reference)


@pytest.mark.parametrize("block", [{}, {"use_bias": False}, {"position_encoding": "rotary", "norm_placement": "pre"}],
                         ids=["bert", "no_bias", "rotary_pre_norm"])
def test_fused_qkv_gives_the_unfused_outputs_and_gradients(block):
    sizes = dict(vocab_size=64, hidden_size=32, num_attention_heads=4, intermediate_size=48, num_hidden_layers=1,
                 max_position_embeddings=16, **block)
    rng = np.random.default_rng(0)
    input_ids = jnp.asarray(rng.integers(5, 64, size=(2, 16)), jnp.int32)
    attention_mask = jnp.asarray(np.arange(16)[None] < np.asarray([[16], [11]]), jnp.int32)
    segment_ids = jnp.zeros_like(input_ids)
    results = []
    for fused in (False, True):
        model = encoder.BertModel(encoder.BertConfig(**sizes, fused_qkv=fused), rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)

        @functools.partial(jax.jit, compiler_options=_QUICK_COMPILE)
        def output_and_grads(params, graphdef=graphdef):
            def loss(params):
                out = nnx.merge(graphdef, params)(input_ids, segment_ids, attention_mask)[0]
                return jnp.sum(jnp.sin(out)), out
            return jax.value_and_grad(loss, has_aux=True)(params)

        (_, out), grads = output_and_grads(params)
        results.append((params, out, grads))
    (params, out, grads), (fused_params, fused_out, fused_grads) = results
    assert jax.tree.structure(params) == jax.tree.structure(fused_params)  # query/key/value stay separate
    np.testing.assert_allclose(fused_out, out, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(fused_grads), jax.tree.leaves(grads), strict=True):  # float32 sums in
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * max(np.abs(b).max(), 1.0))  # another order


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_dropout_keys_are_deterministic_per_key_and_differ_between_keys(impl):
    def mask(seed):
        key = steps_lib.dropout_key_with_impl(jax.random.fold_in(jax.random.key(0), seed), impl)
        assert jax.random.key_impl(key) == jax.random.key_impl(jax.random.key(0, impl=impl))
        return np.asarray(nnx.Dropout(0.5)(jnp.ones(256), deterministic=False, rngs=nnx.Rngs(dropout=key)))

    first, again, other = mask(1), mask(1), mask(2)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert 0.35 < (first == 0).mean() < 0.65


def test_rbg_dropout_keeps_masks_and_resume_and_still_drops():
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(rng) for _ in range(2)]
    no_dropout = {}
    for prng in ("threefry", "rbg"):  # without dropout the PRNG of dropout must change nothing: same masks
        config = tiny_config(dropout_prng=prng)
        config.model.hidden_dropout_prob = config.model.attention_probs_dropout_prob = 0.0
        no_dropout[prng], *_ = _losses(config, batches, steps=2)
    np.testing.assert_array_equal(no_dropout["rbg"], no_dropout["threefry"])

    losses, state, step, mesh = _losses(tiny_config(dropout_prng="rbg"), batches, steps=1)
    assert abs(losses[0] - no_dropout["rbg"][0]) > 1e-4  # dropout acts
    saved = jax.device_get(state)
    batch = parallel.to_global_batch(batches[1], parallel.batch_sharding(mesh))
    _, first = step(state, batch)
    resumed = jax.device_put(saved, jax.tree.map(lambda x: x.sharding, state))
    _, again = step(resumed, batch)  # the same step from the saved state: the same dropout, bit for bit
    assert float(first["loss"]) == float(again["loss"])


_ENTRYPOINT = textwrap.dedent("""
    import os, sys
    from bert_jax import cli
    def main(argv):
        print("RUN", os.environ.get("GLIBC_TUNABLES", ""), os.environ.get(cli.REEXEC_MARK_ENV, ""), argv[1:])
        sys.exit(7)
    cli.run_app(main, huge_pages=True)
""")


def _run_entrypoint(tmp_path, **env):
    script = tmp_path / "entry.py"
    script.write_text(_ENTRYPOINT)
    environ = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", cli.REEXEC_MARK_ENV,
                                                                cli.NO_REEXEC_ENV)}
    environ.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, "-u", str(script), "--", "x y"], check=False, env=environ, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(sys.platform != "linux", reason="the restart is for glibc on Linux")
def test_a_command_restarts_once_with_huge_pages_keeping_argv_and_exit_status(tmp_path):
    result = _run_entrypoint(tmp_path, GLIBC_TUNABLES="glibc.malloc.arena_max=2")
    assert result.returncode == 7, result.stderr
    assert result.stdout.splitlines() == ["RUN glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1 1 ['x y']"]


@pytest.mark.skipif(sys.platform != "linux", reason="the restart is for glibc on Linux")
def test_the_restart_can_be_switched_off(tmp_path):
    result = _run_entrypoint(tmp_path, **{cli.NO_REEXEC_ENV: "1"})
    assert result.returncode == 7, result.stderr
    assert result.stdout.splitlines() == ["RUN   ['x y']"]


def test_no_restart_where_jax_would_not_use_the_cpu(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "execve", lambda *args: pytest.fail("restarted"))
    cli.reexec_with_huge_pages({"JAX_PLATFORMS": "cuda"})
    cli.reexec_with_huge_pages({"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    cli.reexec_with_huge_pages({"JAX_PLATFORMS": "cpu", cli.REEXEC_MARK_ENV: "1"})


def test_the_switches_are_validated():
    from bert_jax import config as config_lib
    for path, value in (("model.matmul_dtype", "float16"), ("train.dropout_prng", "philox")):
        config = tiny_config()
        group, name = path.split(".")
        config = ml_collections.ConfigDict(config.to_dict())
        config[group][name] = value
        with pytest.raises(config_lib.InputError, match=name):
            config_lib.validate(config)
