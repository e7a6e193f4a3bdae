"""Shared fixtures: 8 fake CPU devices, a small generated corpus, a tokenizer trained on it, its splits."""

import os

# Before anything imports JAX: 8 fake CPU devices, so sharding is exercised on any machine.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Commands the tests start skip their huge-page restart (it costs a second start-up each); test_cpu_speed.py
# tests the restart itself.
os.environ.setdefault("BERT_JAX_NO_REEXEC", "1")

import importlib.util
import random  # noqa: E402

import pytest

from bert_jax.data import corpus, sentencepiece_tokenizer, tokenizer_factory

_WORDS = (
    "the a of and to in is was for on that with as by at from it his her they we this which be are "
    "river mountain forest village city king queen soldier farmer merchant ship harbor winter summer "
    "bridge castle garden market road tower storm letter song story teacher student machine engine "
    "stone gold silver bread water fire wind night morning evening window door table chair book "
    "walked carried opened closed wrote read built found lost gave took heard saw sent kept brought "
    "quickly slowly quietly loudly early late never always often again together alone away home "
    "old new small large dark bright cold warm green red blue white heavy light long short"
).split()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: multi-process runs of a minute or more, left out of the default "
                                       "command (run them with `python -m pytest -q tests -m slow`)")


# Long learning checks whose ground is covered by faster tests in the default command, moved to the slow tier
# to keep CI under 20 minutes on a 2-core machine (each 13-20 s there).
_SLOW_TIER = (
    "test_runner.py::test_qa_learns_spans_over_windows[1.1]",
    "test_runner.py::test_multiple_choice_learns_the_gold_ending",
    "test_runner.py::test_regression_learns_a_count",
    "test_parallel.py::test_bert_large_memory_per_device",
    "test_parallel.py::test_the_memory_check_counts_each_devices_shard",
    "test_loop.py::test_recipes_train_and_evaluate[roberta]",
    "test_benchmarking.py::test_hf_torch_baseline_runs_and_prints_a_ratio",
    "test_finetune_students.py::test_every_task_kind_fine_tunes_from_the_model[distilbert-classification]",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("/")[-1] in _SLOW_TIER:
            item.add_marker(pytest.mark.slow)


def load_benchmark_script(relative_path: str, name: str):
    """A script under benchmarks/ (not a package) imported as module `name`, for tests of its functions."""
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", relative_path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_documents(num_docs: int, seed: int) -> list[list[str]]:
    """Random English-like documents: 3-10 sentences of 5-13 words each."""
    rng = random.Random(seed)
    documents = []
    for _ in range(num_docs):
        document = []
        for _ in range(rng.randint(3, 10)):
            words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 13))]
            document.append(" ".join(words).capitalize() + ".")
        documents.append(document)
    return documents


def write_corpus(path, documents) -> str:
    path.write_text("\n\n".join("\n".join(d) for d in documents) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """Path of a 60-document corpus in bert format."""
    return write_corpus(tmp_path_factory.mktemp("text") / "corpus.txt", make_documents(60, seed=0))


@pytest.fixture(scope="session")
def small_tokenizer(corpus_file, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("spm") / "spm"
    return tokenizer_factory.load_tokenizer(sentencepiece_tokenizer.train_tokenizer([corpus_file], str(prefix), 300))


@pytest.fixture(scope="session")
def sources(corpus_file, small_tokenizer, tmp_path_factory):
    """{'train', 'eval'} data sources of the corpus, 20% of documents held out."""
    data_dir = tmp_path_factory.mktemp("tfds")
    return corpus.build_corpus(corpus_file, "", 0.2, small_tokenizer, str(data_dir))


def prepare_fake_tfds(data_dir, name, config, features, splits, version="1.0.0"):
    """Prepares TFDS dataset `name` (`config`, or none) in array_record, laid out as the real builder
    would lay it out, from `splits` {split: [feature dict]}: no network, no TensorFlow."""
    import pathlib

    import tensorflow_datasets as tfds

    class Fake(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config)] if config else []

        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls):
            return pathlib.Path(__file__)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(examples) for split, examples in splits.items()}

        def _generate_examples(self, examples):
            yield from enumerate(examples)

    Fake.name = name
    tfds.display_progress_bar(False)
    Fake(data_dir=str(data_dir), file_format="array_record", **({"config": config} if config else {})
         ).download_and_prepare()

