"""benchmarks/time_to_quality/run_hf_trainer.py: run_mlm.py's blocks from token-id sentences."""

import numpy as np
import pytest
from conftest import load_benchmark_script


@pytest.fixture(scope="module")
def hf_trainer():
    return load_benchmark_script("time_to_quality/run_hf_trainer.py", "ttq_hf_trainer")


def test_group_texts_wraps_lines_and_drops_each_groups_remainder(hf_trainer):
    sentences = [[10, 11], [12], [13, 14, 15], [16]]
    # Groups of 2 lines: [2 10 11 3 2 12 3] -> one block of 4 (3 dropped); [2 13 14 15 3 2 16 3] -> two.
    blocks = hf_trainer.group_texts(sentences, cls_id=2, sep_id=3, block_size=4, lines_per_group=2)
    np.testing.assert_array_equal(blocks, [[2, 10, 11, 3], [2, 13, 14, 15], [3, 2, 16, 3]])
    assert blocks.dtype == np.int32
    everything = hf_trainer.group_texts(sentences, cls_id=2, sep_id=3, block_size=4, lines_per_group=1000)
    expected = np.array([2, 10, 11, 3, 2, 12, 3, 2, 13, 14, 15, 3, 2, 16, 3])[:12].reshape(3, 4)
    np.testing.assert_array_equal(everything, expected)
    assert hf_trainer.group_texts([[5]], cls_id=2, sep_id=3, block_size=4).shape == (0, 4)


def test_split_sentences_follows_sentence_lengths(hf_trainer):
    document = {"tokens": np.arange(6, dtype=np.int32), "sentence_lengths": np.array([2, 1, 3], np.int32)}
    assert [s.tolist() for s in hf_trainer.split_sentences(document)] == [[0, 1], [2], [3, 4, 5]]
