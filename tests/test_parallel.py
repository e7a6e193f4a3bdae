"""FSDP over the ('data', 'fsdp') mesh: the same losses as data parallelism, state really split, the rule on
BERT-Large's shapes, its per-device memory, and checkpoints that restore across fsdp sizes."""

import importlib.util
import pathlib
from types import SimpleNamespace

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from test_distributed import _assert_same, _flags, _metrics, _run_single, _run_two_processes
from test_steps import synthetic_batch, tiny_config

from bert_jax import config as config_lib
from bert_jax.config import InputError
from bert_jax.pretraining import run_checkpoint
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import checkpoint as checkpoint_lib
from bert_jax.runtime import parallel
from bert_jax.tools import model_stats

ROOT = pathlib.Path(__file__).resolve().parents[1]


def fsdp_config():
    """test_steps' tiny model, wide enough (hidden 128) that its kernels and embeddings reach FSDP_MIN_SIZE."""
    config = tiny_config()
    config.model.update({"hidden_size": 128, "intermediate_size": 256})
    return config_lib.validate(config)


def build(config, data, fsdp):
    config.mesh.update({"data": data, "fsdp": fsdp})
    mesh = parallel.make_mesh(config.mesh)
    setup, create = steps_lib.make_pretraining_setup(config, mesh)  # synthetic ids: specials 0..4, VOCAB pieces
    return mesh, setup, create(), steps_lib.make_train_step(setup, mesh, config.train)


def intermediate_kernel(params):
    return params["bert"]["layers"][0]["intermediate"]["kernel"][...]  # [hidden 128, intermediate 256]


def test_mesh_shapes_and_errors():
    assert dict(parallel.make_mesh(ml_collections.ConfigDict({"data": -1})).shape) == {"data": 8, "fsdp": 1}
    assert dict(parallel.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 4})).shape) == {"data": 2, "fsdp": 4}
    mesh = parallel.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": 2}))  # a subset of one process's devices
    assert dict(mesh.shape) == {"data": 1, "fsdp": 2}
    assert parallel.batch_sharding(mesh).spec == P(("data", "fsdp"))
    with pytest.raises(InputError, match=r"config\.mesh\.fsdp=3 does not divide the 8 devices available.*"
                                         r"use an fsdp that divides 8"):
        parallel.make_mesh(ml_collections.ConfigDict({"data": -1, "fsdp": 3}))
    with pytest.raises(InputError, match=r"config\.mesh\.data=4 x config\.mesh\.fsdp=4 = 16 devices but 8 devices "
                                         r"are available; use -1 for all devices not used by fsdp"):
        parallel.make_mesh(ml_collections.ConfigDict({"data": 4, "fsdp": 4}))


def test_fsdp_gives_the_losses_of_data_parallelism_with_the_state_split():
    rng = np.random.default_rng(1)
    batches = [synthetic_batch(rng) for _ in range(3)]
    results = {}
    for data, fsdp in ((8, 1), (2, 4)):
        mesh, _, state, step = build(fsdp_config(), data, fsdp)
        losses = []
        for batch in batches:
            state, metrics = step(state, parallel.to_global_batch(batch, parallel.batch_sharding(mesh)))
            losses.append(float(metrics["loss"]))
        assert step._cache_size() == 1
        results[fsdp] = (losses, jax.device_get(state.params), state)
    np.testing.assert_allclose(results[1][0], results[4][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[4][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

    state = results[4][2]
    kernel = intermediate_kernel(state.params)
    assert kernel.sharding.spec == P(None, "fsdp")
    assert {shard.data.shape for shard in kernel.addressable_shards} == {(128, 256 // 4)}
    moments = [leaf for leaf in jax.tree.leaves(state.opt_state) if leaf.shape == kernel.shape]
    assert moments and all(m.sharding.spec == P(None, "fsdp") for m in moments)  # Adam's mu and nu follow
    ln_scale = state.params["bert"]["embeddings"]["layer_norm"]["scale"][...]
    assert ln_scale.sharding.spec == P() and state.step.sharding.spec == P() and state.rng.sharding.spec == P()
    unsplit = intermediate_kernel(results[1][2].params)
    assert unsplit.sharding.spec == P() and unsplit.addressable_shards[0].data.shape == (128, 256)


def _bert_large():
    spec = importlib.util.spec_from_file_location("bert_large", ROOT / "configs" / "bert_large.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return config_lib.validate(module.get_config())


def test_sharding_rule_on_bert_large_shapes():
    config = _bert_large()
    config.mesh.update({"data": 2, "fsdp": 4})
    mesh = parallel.make_mesh(config.mesh)
    setup, _ = steps_lib.make_pretraining_setup(config, mesh)  # abstract: nothing allocated
    specs = nnx.to_pure_dict(jax.tree.map(lambda s: s.spec, setup.state_sharding.params))
    embeddings, layer = specs["bert"]["embeddings"], specs["bert"]["layers"][0]
    assert embeddings["word_embeddings"]["embedding"] == P(None, "fsdp")  # [30522, 1024]: 30522 % 4 != 0
    assert layer["attention"]["query"]["kernel"] == P("fsdp", None)  # [1024, 1024]: the first on a tie
    assert layer["intermediate"]["kernel"] == P(None, "fsdp")  # [1024, 4096]
    assert layer["output"]["kernel"] == P("fsdp", None)  # [4096, 1024]
    for small in (layer["intermediate"]["bias"], layer["output_layer_norm"]["scale"], specs["mlm_head"]["bias"],
                  embeddings["token_type_embeddings"]["embedding"], specs["pair_head"]["dense"]["kernel"]):
        assert small == P()
    assert setup.state_sharding.step.spec == P() and setup.state_sharding.rng.spec == P()
    for path, leaf in jax.tree_util.tree_leaves_with_path(setup.abstract_state):
        sharding = leaf.sharding
        big = leaf.size >= parallel.FSDP_MIN_SIZE and any(d % 4 == 0 for d in leaf.shape)
        assert ("fsdp" in sharding.spec) == big, jax.tree_util.keystr(path)
        if big:
            split = sharding.spec.index("fsdp")
            assert leaf.shape[split] == max(d for d in leaf.shape if d % 4 == 0)
            assert sharding.shard_shape(leaf.shape)[split] == leaf.shape[split] // 4
    # fsdp 1: every leaf replicated, as before the fsdp axis existed.
    assert {s.spec for s in jax.tree.leaves(parallel.state_shardings(setup.abstract_state,
                                                                     parallel.make_mesh(ml_collections.ConfigDict(
                                                                         {"data": -1}))))} == {P()}


def test_bert_large_memory_per_device():
    config = _bert_large()
    total = model_stats.memory_bytes(model_stats.parameter_breakdown(config)["total_params"])
    memory = {fsdp: model_stats.per_device_memory_bytes(config, fsdp) for fsdp in (1, 4, 8)}
    # fsdp 1: float32 parameters + two AdamW moments (+ the optimizer's scalar step counts).
    assert 0 <= memory[1]["param_and_optimizer_bytes_per_device"] - total["param_and_optimizer_bytes"] < 64
    for fsdp in (4, 8):
        ratio = memory[fsdp]["param_and_optimizer_bytes_per_device"] / memory[1]["param_and_optimizer_bytes_per_device"]
        assert 1 / fsdp < ratio < 1.05 / fsdp, (fsdp, ratio)  # only biases, LayerNorm and a few odd shapes replicated
        assert memory[fsdp]["optimizer_bytes_per_device"] == pytest.approx(
            2 * memory[fsdp]["param_bytes_per_device"], abs=64)


def _save(workdir, state, config):
    tokenizer = SimpleNamespace(kind="sentencepiece", serialized_model=lambda: b"unused")
    checkpointer = checkpoint_lib.Checkpointer(str(workdir), async_save=False)
    checkpointer.save(int(jax.device_get(state.step)), state, config=config, tokenizer=tokenizer)
    checkpointer.close()


def _restore(workdir, setup):
    checkpointer = checkpoint_lib.Checkpointer(str(workdir), create=False, async_save=False)
    state = checkpointer.restore_state(checkpointer.latest_step(), setup.abstract_state)
    checkpointer.close()
    return state


def _check_restored(state, setup, expected):
    for leaf, want in zip(jax.tree.leaves(state), jax.tree.leaves(setup.state_sharding), strict=True):
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim)
    for a, b in zip(jax.tree.leaves(jax.device_get(state)), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # long end-to-end case: `-m slow`, to keep CI under 20 minutes
def test_checkpoint_restores_across_fsdp_sizes(tmp_path):
    """fsdp 4 -> 1 (and a step trained there) -> 4: the same values, each time on the new run's shardings."""
    config = fsdp_config()
    _, split_setup, state, _ = build(config, 2, 4)
    expected = jax.device_get(state)
    _save(tmp_path / "fsdp4", state, config)

    mesh, setup, _, step = build(fsdp_config(), 8, 1)
    state = _restore(tmp_path / "fsdp4", setup)
    _check_restored(state, setup, expected)
    assert intermediate_kernel(state.params).sharding.spec == P()
    state, metrics = step(state, parallel.to_global_batch(synthetic_batch(np.random.default_rng(2)),
                                                          parallel.batch_sharding(mesh)))
    assert np.isfinite(float(metrics["loss"])) and int(state.step) == 1
    expected = jax.device_get(state)
    _save(tmp_path / "fsdp1", state, config)

    state = _restore(tmp_path / "fsdp1", split_setup)
    _check_restored(state, split_setup, expected)
    assert intermediate_kernel(state.params).sharding.spec == P(None, "fsdp")


@pytest.mark.slow  # two real processes, about a minute: `python -m pytest -q tests -m slow`
def test_two_processes_with_fsdp_match_one_without(tmp_path, corpus_file, small_tokenizer):
    """2 processes x 2 CPU devices, fsdp 2 (each fsdp group one process's devices) == 1 process x 4, fsdp 1."""
    wide = ["--config.model.hidden_size=128", "--config.model.intermediate_size=256"]  # kernels reach the minimum
    single, multi = tmp_path / "single", tmp_path / "multi"
    _run_single(_flags(corpus_file, small_tokenizer.model_path, single) + wide)
    _run_two_processes(_flags(corpus_file, small_tokenizer.model_path, multi) + wide + ["--config.mesh.fsdp=2"])
    _assert_same(_metrics(single), _metrics(multi))

    # The 2-process checkpoint (each process wrote its shards) restores here (8 devices: data 4 x fsdp 2).
    split, whole = run_checkpoint.restore_run_checkpoint(str(multi)), run_checkpoint.restore_run_checkpoint(str(single))
    kernel = intermediate_kernel(split.state.params)
    assert dict(split.mesh.shape) == {"data": 4, "fsdp": 2} and kernel.sharding.spec == P(None, "fsdp")
    assert {shard.data.shape for shard in kernel.addressable_shards} == {(128, 128)}
    for a, b in zip(jax.tree.leaves(jax.device_get(split.state.params)),
                    jax.tree.leaves(jax.device_get(whole.state.params)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_the_memory_check_counts_each_devices_shard():
    """check_state_fits counts what one device holds: under fsdp 4 a quarter of the big arrays, as the summary
    command's per-device figure (computed over an abstract mesh) says; a state 4096x that is refused."""
    from bert_jax.tools import model_stats
    config = _bert_large()
    config.mesh.update({"data": 2, "fsdp": 4})
    setup, _ = steps_lib.make_pretraining_setup(config, parallel.make_mesh(config.mesh))
    expected = model_stats.per_device_memory_bytes(config, fsdp=4)
    small = setup.abstract_state.step, setup.abstract_state.rng  # replicated scalars the summary leaves out
    assert parallel.bytes_per_device(setup.abstract_state) - parallel.bytes_per_device(small) == (
        expected["param_bytes_per_device"] + expected["optimizer_bytes_per_device"])
    replicated = model_stats.per_device_memory_bytes(config, fsdp=1)
    assert parallel.bytes_per_device(setup.abstract_state.params) < replicated["param_bytes_per_device"] / 3.5
    with pytest.raises(config_lib.InputError, match=r"needs at least [\d,.]+ GiB per device for its [\d,]+ param"):
        parallel.check_state_fits(jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(
            (leaf.shape[0] * 4096,) + leaf.shape[1:] if leaf.ndim else leaf.shape, leaf.dtype,
            sharding=leaf.sharding) if leaf.ndim else leaf, setup.abstract_state))
