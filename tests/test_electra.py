"""ELECTRA: parameter counts against transformers, each loss term against NumPy float64, the generator's
samples, the shared embeddings, a short real pretraining run that resumes bitwise, and the import of
transformers' ElectraForPreTraining (+ ElectraForMaskedLM) checkpoints."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_documents, write_corpus
from flax import nnx
from test_encoder import load_config

from bert_jax import config as config_lib
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import electra, loop, losses, masking
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import checkpoint as checkpoint_lib
from bert_jax.runtime import parallel

VOCAB, SEQ, NUM_SPECIAL = 64, 16, 5


def _count(tree) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(tree))


def tiny_config(**electra_fields):
    config = config_lib.electra_recipe(config_lib.default_config())
    config.model.update({"vocab_size": VOCAB, "embedding_size": 24, "hidden_size": 32, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": SEQ})
    config.data.update({"max_seq_length": SEQ, "tokenizer_vocab_size": VOCAB})
    config.masking.max_predictions_per_seq = 4
    config.electra.update({"generator_hidden_fraction": 0.5, **electra_fields})
    return config_lib.validate(config)


def _batch(rng, batch=4):
    input_ids = np.zeros((batch, SEQ), np.int32)
    for row in range(batch):
        length = int(rng.integers(10, SEQ + 1))
        input_ids[row, :length] = rng.integers(NUM_SPECIAL, VOCAB, size=length)
        input_ids[row, [0, length - 1]] = [2, 3]
    return {"input_ids": jnp.asarray(input_ids), "segment_ids": jnp.zeros_like(input_ids),
            "attention_mask": jnp.asarray((input_ids > 0).astype(np.int32))}


def _hf_count(class_name, **sizes):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        model = getattr(transformers, class_name)(transformers.ElectraConfig(vocab_size=30522, **sizes))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,published_millions", [("electra_small", 13.5), ("electra_base", 110)])
def test_recipe_counts_match_transformers(name, published_millions):
    """Discriminator (encoder + RTD head) = ElectraForPreTraining; the generator with the shared tables (and
    no discriminator projection) = ElectraForMaskedLM of the generator's shape."""
    config = config_lib.validate(load_config(name))
    params = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: pretraining_heads.build_model(config, 0)), nnx.Param))
    m = config.model
    width = m.embedding_size or m.hidden_size
    discriminator = _count(params["bert"]) + _count(params["discriminator_head"])
    assert discriminator == _hf_count("ElectraForPreTraining", embedding_size=width, hidden_size=m.hidden_size,
                                      num_hidden_layers=m.num_hidden_layers, num_attention_heads=m.num_attention_heads,
                                      intermediate_size=m.intermediate_size)
    assert abs(_count(params["bert"]) / 1e6 - published_millions) / published_millions < 0.02
    shared = {k: v for k, v in params["bert"]["embeddings"].items() if k != "projection"}
    assert set(params["generator"]["embeddings"]) <= {"projection"}  # its tables are the discriminator's
    generator = _count(shared) + _count(params["generator"]) + _count(params["generator_head"])
    size = config_lib.electra_generator_size(m.hidden_size, m.num_hidden_layers, config.electra)
    assert generator == _hf_count("ElectraForMaskedLM", embedding_size=width, **size)
    if name == "electra_base":  # google/electra-base-generator's shape
        assert size == {"hidden_size": 256, "num_hidden_layers": 12, "intermediate_size": 1024, "num_attention_heads": 4}


def test_generator_shares_the_embedding_tables():
    model = pretraining_heads.build_model(tiny_config(), seed=0)
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "layer_norm"):
        assert getattr(model.generator.embeddings, name) is getattr(model.bert.embeddings, name)
    assert model.generator.embeddings.projection is not model.bert.embeddings.projection  # 24 -> 16 and 24 -> 32
    assert model.generator.embeddings.projection.kernel.shape == (24, 16)
    assert model.bert.pooler is None and model.generator.pooler is None


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_each_loss_term_against_numpy_float64():
    config = tiny_config()
    model = pretraining_heads.build_model(config, seed=1)
    graphdef, params = nnx.split(model, nnx.Param)
    spec = electra.ElectraSpec.from_config(config.electra, NUM_SPECIAL, VOCAB, VOCAB)
    batch = _batch(np.random.default_rng(0))
    masking_spec = masking.MaskingSpec.from_config(config.masking, mask_id=4, first_random_id=NUM_SPECIAL,
                                                   vocab_size=VOCAB)
    maskable = masking.maskable_positions(batch["input_ids"], batch["attention_mask"], NUM_SPECIAL)
    masked = masking.mask_tokens(jax.random.key(3), batch["input_ids"], maskable, masking_spec)
    example_weights = jnp.asarray([1.0, 1.0, 1.0, 0.0])  # the last row is an evaluation batch's filler
    sample_key = jax.random.key(7)
    sums = electra.electra_sums(graphdef, spec, params, batch, masked, example_weights, deterministic=True,
                                sample_key=sample_key)

    # Generator MLM term.
    gen_logits = np.asarray(model.generator_logits(masked.input_ids, batch["segment_ids"], batch["attention_mask"],
                                                   masked.masked_positions), np.float64)
    weights = np.asarray(masked.masked_lm_weights, np.float64) * np.asarray(example_weights)[:, None]
    labels = np.asarray(masked.masked_lm_ids)
    nll = -np.take_along_axis(_np_log_softmax(gen_logits), labels[..., None], -1)[..., 0]
    mlm_loss = (nll * weights).sum() / weights.sum()
    np.testing.assert_allclose(float(sums["mlm_loss_sum"] / sums["mlm_count"]), mlm_loss, rtol=1e-5)

    # Discriminator input and labels, built in NumPy from the same samples.
    sampled = np.asarray(electra.sample_replacements(sample_key, jnp.asarray(gen_logits, jnp.float32),
                                                     spec.sampleable, spec.temperature))
    original = np.asarray(batch["input_ids"])
    corrupted = original.copy()
    for row, slot in zip(*np.nonzero(np.asarray(masked.masked_lm_weights))):
        corrupted[row, int(masked.masked_positions[row, slot])] = sampled[row, slot]
    is_replaced = (corrupted != original).astype(np.float64)
    logits = np.asarray(model.discriminator_logits(jnp.asarray(corrupted), batch["segment_ids"],
                                                   batch["attention_mask"]), np.float64)
    token_weights = (original > 0) * np.asarray(example_weights)[:, None]
    probs = 1.0 / (1.0 + np.exp(-logits))
    bce = -(is_replaced * np.log(probs) + (1 - is_replaced) * np.log(1 - probs))
    rtd_loss = (bce * token_weights).sum() / token_weights.sum()
    np.testing.assert_allclose(float(sums["rtd_loss_sum"] / sums["rtd_count"]), rtd_loss, rtol=1e-5)
    assert float(sums["rtd_count"]) == token_weights.sum()
    assert float(sums["rtd_replaced_count"]) == (is_replaced * token_weights).sum()
    assert float(sums["rtd_correct"]) == (((logits > 0) == is_replaced) * token_weights).sum()

    # Total: generator MLM + 50 * RTD.
    np.testing.assert_allclose(float(losses.pretraining_loss(sums)), mlm_loss + 50.0 * rtd_loss, rtol=1e-5)
    reported = losses.summarize(jax.device_get(sums))
    np.testing.assert_allclose(reported["loss"], mlm_loss + 50.0 * rtd_loss, rtol=1e-5)
    np.testing.assert_allclose(reported["rtd_loss"], rtd_loss, rtol=1e-5)


def test_rtd_loss_is_a_stable_sigmoid_cross_entropy():
    logits = jnp.asarray([[-200.0, 0.0, 3.0, 200.0]])
    labels = jnp.asarray([[1, 0, 1, 0]])
    sums = losses.replaced_token_sums(logits, labels, jnp.ones((1, 4)), rtd_weight=2.0)
    expected = 200.0 + np.log(2.0) + np.log1p(np.exp(-3.0)) + 200.0
    np.testing.assert_allclose(float(sums["rtd_loss_sum"]), expected, rtol=1e-6)
    np.testing.assert_allclose(float(sums["rtd_weighted_loss_sum"]), 2 * expected, rtol=1e-6)


def test_samples_only_at_masked_positions_and_never_special():
    """The generator wants special tokens above all: none is ever put in, and only masked slots change."""
    rng = np.random.default_rng(0)
    batch, slots, seq = 64, 6, 24
    input_ids = rng.integers(NUM_SPECIAL, VOCAB, size=(batch, seq)).astype(np.int32)
    positions = np.stack([rng.choice(np.arange(1, seq), slots, replace=False) for _ in range(batch)]).astype(np.int32)
    weights = (rng.random((batch, slots)) < 0.7).astype(np.float32)
    positions = positions * (weights > 0)  # unused slots point at 0, as masking leaves them
    logits = rng.normal(size=(batch, slots, VOCAB)).astype(np.float32)
    logits[..., :NUM_SPECIAL] += 50.0
    sampleable = electra.sampleable_ids(NUM_SPECIAL, VOCAB - 4, VOCAB)  # ids past the tokenizer's are padding
    sampled = np.asarray(electra.sample_replacements(jax.random.key(0), jnp.asarray(logits), sampleable, 1.0))
    assert sampled.min() >= NUM_SPECIAL and sampled.max() < VOCAB - 4
    corrupted, is_replaced = map(np.asarray, electra.replace_tokens(
        jnp.asarray(input_ids), jnp.asarray(positions), jnp.asarray(weights), jnp.asarray(sampled)))
    masked = np.zeros_like(input_ids, bool)
    for row, slot in zip(*np.nonzero(weights)):
        masked[row, positions[row, slot]] = True
    changed = corrupted != input_ids
    assert not changed[~masked].any() and changed.any()
    assert (corrupted[masked] >= NUM_SPECIAL).all()
    np.testing.assert_array_equal(is_replaced, changed)
    # With a special-token table (an imported WordPiece vocabulary's [unusedN] included).
    table = np.zeros(VOCAB, bool)
    table[[0, 1, 2, 3, 4, 10, 11]] = True
    assert not electra.sampleable_ids(table, VOCAB, VOCAB)[[0, 4, 10, 11]].any()


def test_a_sample_equal_to_the_original_counts_as_original():
    input_ids = jnp.asarray([[2, 10, 11, 12, 13, 3]])
    positions = jnp.asarray([[1, 2, 4]])
    weights = jnp.asarray([[1.0, 1.0, 1.0]])
    sampled = jnp.asarray([[10, 20, 13]])  # slots 0 and 2 draw the original token back
    corrupted, is_replaced = electra.replace_tokens(input_ids, positions, weights, sampled)
    np.testing.assert_array_equal(corrupted, [[2, 10, 20, 12, 13, 3]])
    np.testing.assert_array_equal(is_replaced, [[0, 0, 1, 0, 0, 0]])
    # A generator certain of the original always gives it back: nothing is labelled replaced.
    logits = jnp.full((1, 3, VOCAB), -30.0).at[0, jnp.arange(3), jnp.asarray([10, 11, 13])].set(30.0)
    sampled = electra.sample_replacements(jax.random.key(1), logits, electra.sampleable_ids(5, VOCAB, VOCAB), 1.0)
    assert not electra.replace_tokens(input_ids, positions, weights, sampled)[1].any()


def test_gumbel_samples_follow_the_tempered_softmax():
    logits = jnp.asarray([[[2.0, 1.0, 0.0, -1.0, 0.5, 1.5]]]).repeat(20_000, axis=1)  # [1, 20000, 6]
    sampleable = np.asarray([True] * 6)
    for temperature in (1.0, 2.0):
        sampled = np.asarray(electra.sample_replacements(jax.random.key(0), logits, sampleable, temperature))
        expected = np.exp(np.asarray(logits[0, 0]) / temperature)
        np.testing.assert_allclose(np.bincount(sampled.ravel(), minlength=6) / sampled.size,
                                   expected / expected.sum(), atol=0.015)


def test_no_gradient_reaches_the_generator_through_the_samples():
    config = tiny_config()
    model = pretraining_heads.build_model(config, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    spec = electra.ElectraSpec.from_config(config.electra, NUM_SPECIAL, VOCAB, VOCAB)
    batch = _batch(np.random.default_rng(1))
    masking_spec = masking.MaskingSpec.from_config(config.masking, mask_id=4, first_random_id=NUM_SPECIAL,
                                                   vocab_size=VOCAB)
    maskable = masking.maskable_positions(batch["input_ids"], batch["attention_mask"], NUM_SPECIAL)
    masked = masking.mask_tokens(jax.random.key(0), batch["input_ids"], maskable, masking_spec)

    def rtd_loss(p):
        sums = electra.electra_sums(graphdef, spec, p, batch, masked, jnp.ones(4), deterministic=True,
                                    sample_key=jax.random.key(2))
        return sums["rtd_loss_sum"]

    grads = nnx.to_pure_dict(jax.grad(rtd_loss)(params))
    assert _count(grads["generator"]) > 0 and all(not np.any(g) for g in jax.tree.leaves(grads["generator"]))
    assert all(not np.any(g) for g in jax.tree.leaves(grads["generator_head"]))
    assert np.any(grads["bert"]["embeddings"]["word_embeddings"]["embedding"])  # shared: the discriminator's use


def test_bad_electra_settings_are_refused():
    config = tiny_config()
    config.electra.generator_hidden_fraction = 0.0
    with pytest.raises(config_lib.InputError, match="generator_hidden_fraction"):
        config_lib.validate(config)
    config = tiny_config()
    config.data.update({"instance_format": "sentence_pairs", "pack_sequences": True})
    config.masking.max_predictions_per_seq = 3
    with pytest.raises(config_lib.InputError, match="pack"):
        config_lib.validate(config)
    config = tiny_config()  # RoPE on the generator's heads: the fraction is what to change, not config.model
    config.model.position_encoding = "rotary"
    config.electra.generator_hidden_fraction = 15 / config.model.hidden_size
    with pytest.raises(config_lib.InputError, match=r"generator_hidden_fraction=.* heads are 15 wide"):
        config_lib.validate(config)


@pytest.mark.slow  # kept out of the 20-minute CI; run with -m slow
def test_pretraining_run_learns_and_resumes_exactly(tmp_path, corpus_file, small_tokenizer):
    """objective 'electra' through the real trainer: the loss falls, the RTD metrics are logged, the evaluation
    reports them, and a restart after a lost checkpoint ends bitwise equal (the samples come from (seed, step))."""
    from test_loop import _metrics, _restore_params, _small_config

    eval_file = write_corpus(tmp_path / "eval.txt", make_documents(12, seed=5))

    def config():
        c = _small_config(corpus_file, eval_file, small_tokenizer.model_path, num_steps=8)
        c = config_lib.electra_recipe(c)
        c.masking.max_predictions_per_seq = 10
        c.electra.generator_hidden_fraction = 0.5
        c.train.update({"warmup_steps": 2, "learning_rate": 2e-3, "eval_every_steps": 4})
        c.checkpoint.every_steps = 4
        return c

    workdir = str(tmp_path / "run")
    loop.train_and_evaluate(config(), workdir)
    first = _metrics(workdir, "train")
    assert first[-1]["loss"] < first[0]["loss"] - 0.5, [m["loss"] for m in first]  # 40.4 -> 39.0 here
    assert {"rtd_loss", "rtd_accuracy", "replaced_fraction", "mlm_accuracy"} <= set(first[-1])
    evaluated = _metrics(workdir, "eval")[-1]
    assert 0.0 < evaluated["replaced_fraction"] < 0.2 and evaluated["rtd_accuracy"] > 0.5

    uninterrupted = _restore_params(workdir, 8, config())
    shutil.rmtree(os.path.join(checkpoint_lib.checkpoint_dir(workdir), "8"))
    loop.train_and_evaluate(config(), workdir)
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(_restore_params(workdir, 8, config())),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert [m["loss"] for m in _metrics(workdir, "train")] == [m["loss"] for m in first]

    # The discriminator fine-tunes through the ordinary entry point, with no ELECTRA-specific code.
    from test_runner import _config as finetune_config
    from test_runner import _write_sst2

    from bert_jax.finetuning import runner
    _write_sst2(tmp_path, num_train=16, num_dev=16)
    report = runner.finetune(finetune_config("sst2", workdir, tmp_path, epochs=1.0), str(tmp_path / "finetune"))
    assert report["init_checkpoint"] == os.path.abspath(workdir)


def test_parameter_count_of_the_setup_is_the_shared_tree():
    """One parameter tree: the shared tables are counted (and optimised) once."""
    config = tiny_config()
    params = nnx.state(pretraining_heads.build_model(config, seed=0), nnx.Param)
    pure = nnx.to_pure_dict(params)
    assert steps_lib.parameter_count(params) == sum(_count(pure[k]) for k in pure)
    assert "word_embeddings" not in pure["generator"]["embeddings"]


def test_model_stats_count_and_flops_of_the_electra_model():
    """Parts add up to the real tree; the FLOPs formula against XLA's count of a forward pass of both models."""
    from bert_jax.tools import model_stats

    config = tiny_config()
    config.model.update({"vocab_size": 1024, "hidden_size": 128, "embedding_size": 64, "intermediate_size": 512,
                         "max_position_embeddings": 128})
    config.data.update({"max_seq_length": 128, "tokenizer_vocab_size": 1024})
    config.masking.max_predictions_per_seq = 20
    parts = model_stats.parameter_breakdown(config)
    model = pretraining_heads.build_model(config, seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    assert parts["total_params"] == steps_lib.parameter_count(params)
    assert parts["generator"] > 0 and parts["rtd_head"] == 128 * 128 + 128 + 128 + 1 and parts["pooler"] == 0
    batch, seq, predictions = 8, 128, 20
    ids = jnp.ones((batch, seq), jnp.int32)
    positions = jnp.tile(jnp.arange(predictions)[None], (batch, 1))

    def forward(p):
        m = nnx.merge(graphdef, p)
        return m.generator_logits(ids, ids * 0, ids, positions), m.discriminator_logits(ids, ids * 0, ids)

    xla_flops = jax.jit(forward).lower(params).compile().cost_analysis()["flops"]
    ours = model_stats.training_flops_per_token(config) * batch * seq / 3
    assert 0.85 < ours / xla_flops < 1.02, (ours, xla_flops)


@pytest.mark.parametrize("embedding_size", [24, 0])  # factorized (ELECTRA-Small-like) and not (Base-like)
def test_export_matches_transformers(tmp_path, small_tokenizer, embedding_size):
    """The discriminator loads as transformers' ElectraForPreTraining and the generator as ElectraForMaskedLM,
    with no missing or unexpected keys, and both compute what ours do to 1e-5."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from test_encoder import _randomize

    from bert_jax.hf import files as hf_files

    config = tiny_config()
    config.model.update({"embedding_size": embedding_size, "vocab_size": small_tokenizer.vocab_size})
    config.data.tokenizer_vocab_size = small_tokenizer.vocab_size
    model = pretraining_heads.build_model(config, seed=0)
    _randomize(model, seed=3)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    written = hf_files.write_electra_directories(str(tmp_path / "hf"), params, config, small_tokenizer)

    rng = np.random.default_rng(0)
    ids = rng.integers(5, small_tokenizer.vocab_size, size=(2, SEQ)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 11:] = 0
    ids[1, 11:] = 0
    segments = np.zeros_like(ids)
    segments[:, 6:] = 1
    ours = {
        "ElectraForPreTraining": np.asarray(model.discriminator_logits(ids, segments, mask)),
        "ElectraForMaskedLM": np.asarray(model.generator_logits(ids, segments, mask,
                                                                jnp.tile(jnp.arange(SEQ)[None], (2, 1)))),
    }
    for architecture, directory in written.items():
        hf_model, info = getattr(transformers, architecture).from_pretrained(directory, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        hf_model.eval()
        with torch.no_grad():
            theirs = hf_model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                              token_type_ids=torch.tensor(segments, dtype=torch.long)).logits.numpy()
        real = mask > 0
        np.testing.assert_allclose(theirs[real], ours[architecture][real], atol=1e-5, rtol=1e-5)


def test_fine_tuning_takes_the_discriminator_and_drops_the_generator(tmp_path, small_tokenizer):
    from bert_jax.finetuning import steps as finetuning_steps
    from bert_jax.finetuning import transfer

    config = tiny_config()
    config.model.vocab_size = small_tokenizer.vocab_size
    config.data.tokenizer_vocab_size = small_tokenizer.vocab_size
    params = nnx.state(pretraining_heads.build_model(config, seed=7), nnx.Param)
    checkpoint_lib.save_params_only(str(tmp_path / "export"), params, config, small_tokenizer,
                                    {"source": "test", "format": "params"})
    source = transfer.load_pretrained(str(tmp_path / "export"))
    fresh = nnx.to_pure_dict(nnx.state(
        finetuning_steps.build_task_model(source.config.model, "classification", 2, 0), nnx.Param))
    moved = transfer.transfer_encoder(source.params, fresh)
    assert {name.split("/")[0] for name in moved.dropped} == {"generator", "generator_head", "discriminator_head"}
    assert "bert/embeddings/word_embeddings/embedding" in moved.loaded
    assert "bert/embeddings/projection/kernel" in moved.loaded  # ELECTRA-Small-like 24 -> 32 projection
    assert set(moved.fresh) == {"bert/pooler/dense/bias", "bert/pooler/dense/kernel", "classifier/bias",
                                "classifier/kernel"}


def _hf_electra_pair(tmp_path, *, embedding_size=24, with_head=True):
    """A random transformers ElectraForPreTraining (or ElectraModel) under tmp_path/hf/discriminator and its
    ElectraForMaskedLM (half as wide, sharing the tables) under tmp_path/hf/generator, each with vocab.txt."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from conftest import _WORDS
    words = sorted(set(_WORDS) | {"gold"})
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    sizes = {"vocab_size": len(pieces), "embedding_size": embedding_size, "max_position_embeddings": 64,
             "num_hidden_layers": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}
    torch.manual_seed(0)
    discriminator_class = transformers.ElectraForPreTraining if with_head else transformers.ElectraModel
    discriminator = discriminator_class(transformers.ElectraConfig(
        hidden_size=32, num_attention_heads=2, intermediate_size=64, **sizes))
    generator = transformers.ElectraForMaskedLM(transformers.ElectraConfig(
        hidden_size=16, num_attention_heads=1, intermediate_size=64, **sizes))
    with torch.no_grad():
        for model in (discriminator, generator):
            for parameter in model.parameters():
                parameter.normal_(0.0, 0.3)
        shared = dict(discriminator.named_parameters())
        prefix = "electra." if with_head else ""
        for name, parameter in generator.named_parameters():
            if name.startswith("electra.embeddings."):  # ELECTRA shares these tables
                parameter.copy_(shared[prefix + name[len("electra."):]])
    directories = {}
    for name, model in (("discriminator", discriminator.eval()), ("generator", generator.eval())):
        directory = tmp_path / "hf" / name
        model.save_pretrained(str(directory))
        (directory / "vocab.txt").write_text("\n".join(pieces) + "\n")
        (directory / "tokenizer_config.json").write_text(
            '{"tokenizer_class": "ElectraTokenizer", "do_lower_case": true}')
        directories[name] = directory
    return discriminator, generator, directories


@pytest.mark.slow  # kept out of the 20-minute CI; run with -m slow
def test_import_of_an_hf_electra_matches_transformers_and_fine_tunes(tmp_path):
    """An HF ElectraForPreTraining + ElectraForMaskedLM pair imports as an objective='electra' export: the
    discriminator's RTD logits and the generator's MLM logits equal transformers' to 1e-5 on a padded batch,
    the export fine-tunes through runner.finetune, and exporting it again gives back the same tensors."""
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file

    from bert_jax.hf import convert as hf_convert
    from bert_jax.hf import files as hf_files
    from bert_jax.pretraining import run_checkpoint

    discriminator, generator, directories = _hf_electra_pair(tmp_path)
    summary = hf_convert.import_hf_directory(str(directories["discriminator"]), str(tmp_path / "export"))
    assert "(electra)" in summary and "fresh" not in summary, summary
    config, tokenizer, params = run_checkpoint.load_params_only(str(tmp_path / "export"))
    _, _, info = checkpoint_lib.read_export_info(str(tmp_path / "export"))
    assert info["fresh_heads"] == [] and info["unused_hf_tensors"] == [], info
    assert info["generator_source"] == os.path.abspath(directories["generator"])
    assert config.objective == "electra" and config.model.embedding_size == 24
    assert config.electra.generator_hidden_fraction == 0.5 and tokenizer.vocab_size == config.model.vocab_size

    model = pretraining_heads.build_model(config, seed=0)
    nnx.update(model, params)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, config.model.vocab_size, size=(2, SEQ)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 9:], ids[1, 9:] = 0, 0
    segments = np.zeros_like(ids)
    segments[:, 6:] = 1
    torch_inputs = {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask),
                    "token_type_ids": torch.tensor(segments, dtype=torch.long)}
    real = mask > 0
    with torch.no_grad():
        theirs = discriminator(**torch_inputs).logits.numpy()
        theirs_generator = generator(**torch_inputs).logits.numpy()
    np.testing.assert_allclose(np.asarray(model.discriminator_logits(ids, segments, mask))[real], theirs[real],
                               atol=1e-5, rtol=1e-5)
    ours_generator = model.generator_logits(ids, segments, mask, jnp.tile(jnp.arange(SEQ)[None], (2, 1)))
    np.testing.assert_allclose(np.asarray(ours_generator)[real], theirs_generator[real], atol=1e-5, rtol=1e-5)

    # Round trip: the export written back as transformers directories holds the very same tensors.
    written = hf_files.write_electra_directories(str(tmp_path / "again"), nnx.to_pure_dict(params), config, tokenizer)
    for architecture, name in (("ElectraForPreTraining", "discriminator"), ("ElectraForMaskedLM", "generator")):
        original = load_file(str(directories[name] / "model.safetensors"))
        again = load_file(os.path.join(written[architecture], "model.safetensors"))
        assert set(again) <= set(original)
        assert set(original) - set(again) <= {"generator_lm_head.weight"}  # tied: HF re-ties it on load
        for key, value in again.items():
            np.testing.assert_array_equal(value, original[key], err_msg=key)

    # The imported discriminator fine-tunes through the ordinary entry point.
    from test_runner import _config as finetune_config
    from test_runner import _write_sst2

    from bert_jax.finetuning import runner
    _write_sst2(tmp_path, num_train=16, num_dev=16)
    report = runner.finetune(finetune_config("sst2", str(tmp_path / "export"), tmp_path, epochs=1.0),
                             str(tmp_path / "finetune"))
    assert report["init_checkpoint"] == os.path.abspath(tmp_path / "export")
    assert "accuracy" in report["seeds"][0]["best"]["validation"]


def test_import_of_an_hf_electra_without_generator_or_head(tmp_path):
    """A bare ElectraModel: the RTD head and, with no generator beside it, the generator start fresh and the
    summary says so; a generator given as --input, or an ElectraForSequenceClassification, is refused."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from bert_jax.finetuning import hf_export
    from bert_jax.hf import convert as hf_convert

    _, _, directories = _hf_electra_pair(tmp_path, embedding_size=32, with_head=False)
    lone = tmp_path / "lone" / "discriminator"
    shutil.copytree(directories["discriminator"], lone)
    summary = hf_convert.import_hf_directory(str(lone), str(tmp_path / "export"))
    assert "generator is initialised fresh" in summary
    assert "initialised fresh (absent from the checkpoint): discriminator_head, generator, generator_head" in summary
    _, _, info = checkpoint_lib.read_export_info(str(tmp_path / "export"))
    assert info["fresh_heads"] == ["discriminator_head", "generator", "generator_head"]
    assert info["generator_source"] is None

    with pytest.raises(config_lib.InputError, match="is an ELECTRA generator .*give the ElectraForPreTraining"):
        hf_convert.import_hf_directory(str(directories["generator"]), str(tmp_path / "export2"))
    task = tmp_path / "task"
    transformers.ElectraForSequenceClassification(transformers.ElectraConfig(
        vocab_size=32, embedding_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
        intermediate_size=32)).save_pretrained(str(task))
    (task / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                                              + [f"w{i}" for i in range(27)]) + "\n")
    with pytest.raises(config_lib.InputError, match="fine-tuned electra task models cannot be imported"):
        hf_export.import_hf_finetuned(str(task), str(tmp_path / "export4"))


@pytest.mark.slow  # ~30 s: kept out of the 20-minute CI; run with -m slow
def test_the_discriminator_learns_replacements_that_stand_out():
    """Rows of ids 5..30 only, replacements drawn by an untrained generator over 5..63: more than half of them
    are out of range, so the discriminator alone (RTD loss, no generator update) must beat the all-original
    baseline quickly. Guards the path samples -> labels -> logits -> gradient against a silent break."""
    import optax

    config = tiny_config()
    config.mesh.data = 1
    mesh = parallel.make_mesh(config.mesh)
    setup, create = steps_lib.make_pretraining_setup(config, mesh)
    params = create().params
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(0)

    @jax.jit
    def update(params, opt_state, batch, key):
        masked = steps_lib.mask_batch(setup, batch, key)

        def rtd_loss(p):
            sums = steps_lib.forward_sums(setup, p, batch, masked, jnp.ones(16), deterministic=True,
                                          sample_key=jax.random.fold_in(key, 1))
            return sums["rtd_loss_sum"] / sums["rtd_count"], sums

        (_, sums), grads = jax.value_and_grad(rtd_loss, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, sums

    accuracies, baselines = [], []
    for i in range(60):
        ids = rng.integers(5, 31, size=(16, SEQ)).astype(np.int32)
        ids[:, 0], ids[:, -1] = 2, 3
        batch = {"input_ids": jnp.asarray(ids), "segment_ids": jnp.zeros_like(ids), "attention_mask": jnp.ones_like(ids)}
        params, opt_state, sums = update(params, opt_state, batch, jax.random.key(i))
        if i >= 40:
            accuracies.append(float(sums["rtd_correct"] / sums["rtd_count"]))
            baselines.append(1 - float(sums["rtd_replaced_count"] / sums["rtd_count"]))
    assert np.mean(accuracies) > np.mean(baselines) + 0.03, (np.mean(accuracies), np.mean(baselines))
