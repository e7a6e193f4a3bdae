"""XLM's MLM + TLM in one run: monolingual rows and translation pairs mixed by `config.data.tlm_ratio`.

With `instance_format='translation_pairs'`, a language-tagged monolingual `config.data.corpus` and
tlm_ratio below 1, the training stream is one `mixture.Mixture` whose components are the monolingual
languages, weighted (1 - tlm_ratio) * q_i with q_i proportional to p_i^language_alpha (as a multilingual run
samples them), and the parallel pairs, weighted tlm_ratio: each epoch holds exactly round(weight * N) rows of
each (N: all instances of both). Monolingual rows are RoBERTa's full rows of one language's text (XLM's MLM
streams), given TLM's keys by `translation_pairs.monolingual_features`, so every batch stacks.

Language ids index the sorted union of both corpora's languages (`config.run_languages`). Every row's
int32 `languages` is its group for the held-out figures: the language id of a monolingual row, and
len(languages), named `config.TLM_GROUP` ('tlm'), for a translation pair (whose two sides have two
languages). The held-out set is eval_num_examples rows of each language plus eval_num_examples pairs,
evaluated in one pass per batch and reported as mlm_accuracy/<language> and mlm_accuracy/tlm.

One tokenizer serves both: given, or trained on the monolingual text and both sides of every pair, all
tagged by language and resampled with tokenizer_alpha as a multilingual corpus is.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from absl import logging

from bert_jax import config as config_lib
from bert_jax.data import corpus as corpus_lib
from bert_jax.data import mixture, pipeline, tokenizer_factory, translation_pairs
from bert_jax.data.languages import LanguageSources
from bert_jax.runtime import workdir_lock

MONOLINGUAL_FORMAT = "full_sentences"  # XLM's MLM reads streams of text, not sentence pairs


class MixedBuilder:
    """The instances of the monolingual languages, then of the pairs, as one range (component c's local
    instance i is instance offsets[c] + i), every row with the same keys. Picklable for Grain workers."""

    def __init__(self, monolingual: Sequence[Any], language_ids: Sequence[int], pairs: Any, tlm_group: int):
        self.builders = [*monolingual, pairs]
        self._language_ids, self._tlm_group = [int(i) for i in language_ids], int(tlm_group)
        self.offsets = np.concatenate([[0], np.cumsum([len(b) for b in self.builders])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __call__(self, instance: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        component = int(np.searchsorted(self.offsets, instance, side="right")) - 1
        example = self.builders[component](instance - int(self.offsets[component]), rng)
        if component == len(self._language_ids):
            return example | {"languages": np.int32(self._tlm_group)}
        language = self._language_ids[component]
        return translation_pairs.monolingual_features(example, language) | {"languages": np.int32(language)}


class MixedSource:
    """One split of a mixed run: the monolingual `LanguageSources`, the `ParallelSource` (whose language ids
    already index `languages`), the run's `languages` and `tlm_ratio`. The pipeline asks it for its stream
    (`mixed_stream`) and held-out rows (`eval_examples`)."""

    def __init__(self, monolingual: LanguageSources, parallel: translation_pairs.ParallelSource,
                 languages: Sequence[str], tlm_ratio: float):
        self.monolingual, self.parallel, self.languages = monolingual, parallel, list(languages)
        self.tlm_ratio = float(tlm_ratio)
        self.statistics = {key: monolingual.statistics[key] + parallel.statistics[key]
                           for key in ("documents", "sentences", "tokens", "shards")}
        self.statistics.update(monolingual=monolingual.statistics, parallel=parallel.statistics)

    def __len__(self) -> int:
        return len(self.monolingual) + len(self.parallel)

    def __repr__(self) -> str:
        return f"MixedSource({self.monolingual!r} + {self.parallel!r}, tlm_ratio {self.tlm_ratio})"

    def builder(self, options: dict) -> MixedBuilder:
        """The rows of every component, from `make_pretraining_iterator`'s options."""
        monolingual_options = dict(options, objective="mlm", instance_format=MONOLINGUAL_FORMAT)
        languages = pipeline._language_builders(self.monolingual, monolingual_options)
        pairs = self.parallel.instance_builder(max_seq_length=options["max_seq_length"],
                                               special_ids=options["special_ids"])
        return MixedBuilder(languages.builders, [self.languages.index(lang) for lang in self.monolingual.languages],
                            pairs, len(self.languages))

    def mixed_stream(self, options: dict, alpha: float) -> tuple[MixedBuilder, grain.MapDataset]:
        """(builder, one epoch of [instance, visit]): the components sampled by `weights` through one Mixture."""
        build = self.builder(options)
        sizes = [len(b) for b in build.builders]
        names = [*self.monolingual.languages, config_lib.TLM_GROUP]
        if min(sizes) == 0:
            raise config_lib.InputError(f"{names[sizes.index(0)]!r} has no training instances; give it text or "
                                        "leave it out.")
        mix = mixture.Mixture(sizes, weights(sizes[:-1], alpha, self.tlm_ratio), seed=options["seed"])
        pipeline.check_not_starved(mix, names, "move config.data.tlm_ratio away from 0 and 1 (or use 1.0 for TLM "
                                   "only), lower config.data.language_alpha, or give it more text")
        logging.info("Mixing MLM and TLM: %.0f%% of the rows are translation pairs (config.data.tlm_ratio), the "
                     "languages share the rest by q_i; row 'tlm' below is the pairs.", 100 * self.tlm_ratio)
        pipeline._log_sampling_table(names, mix, alpha)
        dataset = grain.MapDataset.range(len(mix)).seed(options["seed"])
        return build, dataset.map_with_index(pipeline._MixtureInstances(mix, build.offsets))

    def eval_examples(self, options: dict, num_examples: int) -> list[dict[str, np.ndarray]]:
        """`num_examples` fixed rows of each monolingual language, then as many translation pairs."""
        build = self.builder(options)
        seed, examples = options["seed"], []
        for component, language in enumerate(self.monolingual.languages):
            language_id = self.languages.index(language)
            rows = pipeline.fixed_examples(build.builders[component], seed + language_id, num_examples,
                                           int(build.offsets[component]))
            examples += [translation_pairs.monolingual_features(row, language_id)
                         | {"languages": np.int32(language_id)} for row in rows]
        pairs = pipeline.fixed_examples(build.builders[-1], seed, num_examples, int(build.offsets[-1]))
        return examples + [row | {"languages": np.int32(len(self.languages))} for row in pairs]


def weights(monolingual_sizes: Sequence[int], alpha: float, tlm_ratio: float) -> np.ndarray:
    """float64 [languages + 1]: (1 - tlm_ratio) * q_i per monolingual language (q_i proportional to
    p_i^alpha), then tlm_ratio for the translation pairs."""
    return np.append((1.0 - tlm_ratio) * mixture.alpha_weights(monolingual_sizes, alpha), tlm_ratio)


# ------------------------------------------------------------------ inputs, fingerprint, tokenized splits

def default_or_given_inputs(config_data, workdir: str, tokenizer=None):
    """(None, tokenizer): `tokenizer`, else `config.data.tokenizer_model`, else one trained once (and cached
    in the workdir) on the monolingual text and both sides of the pairs, tagged by language."""
    if tokenizer is None and config_data.tokenizer_model:
        tokenizer = tokenizer_factory.load_tokenizer(config_data.tokenizer_model)
    if tokenizer is not None:
        return None, tokenizer
    pairs = translation_pairs.parallel_pairs(config_data)
    if not os.path.isfile(os.path.join(workdir, "tokenizer", "spm.model")):
        translation_pairs._counted_splits(pairs, 0.0)  # bad pairs said as such, before SentencePiece reads them
    entries = [f"{language}:{part}" for language, spec in config_lib.monolingual_languages(config_data).items()
               for part in spec.split(",")]
    entries += [f"{language}:{path}" for pair in pairs
                for language, path in ((pair.src, pair.src_path), (pair.tgt, pair.tgt_path))]
    text = copy.deepcopy(config_data)
    text.corpus, text.language_folders = ",".join(entries), False
    _, tokenizer = corpus_lib.default_or_given_inputs(text, workdir)
    return None, tokenizer


def corpus_fingerprint(config_data) -> dict[str, Any]:
    """Both corpora as one fingerprint (`corpus.corpus_fingerprint` of the monolingual text, then
    `translation_pairs.corpus_fingerprint`), so another file of either is another training stream; the
    held-out part is the monolingual corpus's (the pairs are held out of the parallel files)."""
    monolingual = corpus_lib.corpus_fingerprint(config_data.corpus, config_data.eval_corpus,
                                                language_folders=config_data.language_folders)
    parallel = translation_pairs.corpus_fingerprint(config_data)["train"]
    parts = [monolingual["train"]["fingerprint"], parallel["fingerprint"]]
    files = [monolingual["train"]["files"], parallel["files"]]
    train = {"fingerprint": hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16],
             "what": f"{monolingual['train']['what']} and {parallel['what']}",
             "files": None if None in files else sum(files),
             "bytes": None if None in files else monolingual["train"]["bytes"] + parallel["bytes"]}
    return {"train": train, "eval": monolingual["eval"]}


def tokenize_splits(config_data, workdir: str, tokenizer) -> dict[str, MixedSource]:
    """{'train', 'eval'}: MixedSources of the tokenized monolingual text and pairs, each cached in the workdir
    as a run of either kind caches it."""
    languages = config_lib.run_languages(config_data)
    monolingual = corpus_lib.tokenize_splits(config_data, workdir, config_data.corpus, tokenizer)
    parallel = translation_pairs.tokenize_splits(config_data, workdir, tokenizer, languages)
    return {split: MixedSource(monolingual[split], parallel[split], languages, config_data.tlm_ratio)
            for split in ("train", "eval")}


def prepare_default_or_given(config_data, workdir: str, tokenizer=None):
    """(tokenizer, tokenized splits) of a mixed run, each built once per workdir."""
    _, tokenizer = default_or_given_inputs(config_data, workdir, tokenizer)
    return tokenizer, tokenize_splits(config_data, workdir, tokenizer)


def prepare_locked(config_data, workdir: str):
    """`prepare_default_or_given` with the workdir locked: what `python -m bert_jax.prepare_corpus` runs."""
    with workdir_lock.workdir_lock(workdir, "corpus preparation"):
        return prepare_default_or_given(config_data, workdir)


def data_module(config_data):
    """The module that prepares a 'translation_pairs' run's data: this one when it mixes in monolingual
    text, else `translation_pairs` (TLM only). Both have the same five functions."""
    return sys.modules[__name__] if config_lib.mixes_monolingual(config_data) else translation_pairs
