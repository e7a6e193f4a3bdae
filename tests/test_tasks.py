"""Fine-tuning task readers: local files in the official formats, TFDS array_record datasets, bad input."""

import json
import os
import pathlib
import socket

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import prepare_fake_tfds

from bert_jax.config import InputError
from bert_jax.finetuning import tasks
from bert_jax.finetuning.tasks import ChoiceExample, ClassificationExample, TokenExample, get_task, load_examples


def _write(directory, name, lines):
    path = pathlib.Path(directory) / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def _tsv(*rows):
    return ["\t".join(row) for row in rows]


# ------------------------------------------------------------------ GLUE TSV

def test_cola_without_header_and_test_with_header(tmp_path):
    _write(tmp_path, "train.tsv", _tsv(
        ("gj04", "1", "", "Our friends won't buy this analysis, let alone the next one we propose."),
        ("gj04", "0", "*", "They drank the pub.")))
    _write(tmp_path, "test.tsv", _tsv(("index", "sentence"), ("0", "Bill whistled past the house.")))
    cola = get_task("cola")
    assert load_examples(cola, "train", data_dir=str(tmp_path)) == [
        ClassificationExample("train-0", "Our friends won't buy this analysis, let alone the next one we propose.",
                              None, 1),
        ClassificationExample("train-1", "They drank the pub.", None, 0)]
    assert load_examples(cola, "test", data_dir=str(tmp_path)) == [
        ClassificationExample("test-0", "Bill whistled past the house.", None, None)]


def test_sst2_keeps_quote_characters(tmp_path):
    _write(tmp_path, "dev.tsv", _tsv(("sentence", "label"), ('the " rock " is destined ', "1"),
                                     ("it 's a charming and often affecting journey . ", "1"),
                                     ("unflinchingly bleak and desperate ", "0")))
    examples = load_examples(get_task("sst2"), "validation", data_dir=str(tmp_path))
    assert [(e.text_a, e.label) for e in examples] == [
        ('the " rock " is destined ', 1), ("it 's a charming and often affecting journey . ", 1),
        ("unflinchingly bleak and desperate ", 0)]
    assert load_examples(get_task("sst2"), "validation", data_dir=str(tmp_path), max_examples=2) == examples[:2]


def test_mrpc_columns_by_header(tmp_path):
    # The GLUE script copies msr_paraphrase_train.txt's header, UTF-8 byte order mark included.
    _write(tmp_path, "train.tsv", _tsv(
        ("\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        ("1", "702876", "702977", 'Amrozi accused his brother , whom he called " the witness " .',
         'Referring to him as only " the witness " , Amrozi accused his brother .'),
        ("0", "2108705", "2108831", "Yucaipa owned Dominick 's before selling the chain .",
         "Yucaipa bought Dominick 's in 1995 .")))
    examples = load_examples(get_task("mrpc"), "train", data_dir=str(tmp_path))
    assert examples[0] == ClassificationExample(
        "train-0", 'Amrozi accused his brother , whom he called " the witness " .',
        'Referring to him as only " the witness " , Amrozi accused his brother .', 1)
    assert examples[1].label == 0


def test_stsb_float_scores(tmp_path):
    header = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2")
    _write(tmp_path, "train.tsv", _tsv(
        header + ("score",),
        ("0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.",
         "An air plane is taking off.", "5.000"),
        ("1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man is playing a flute.",
         "A man is playing a bamboo flute.", "3.800")))
    _write(tmp_path, "test.tsv", _tsv(header, ("0", "main-captions", "MSRvid", "2012test", "0024", "none",
                                               "none", "A girl is styling her hair.", "A girl is brushing.")))
    stsb = get_task("stsb")
    assert stsb.kind == "regression" and stsb.label_names == ()
    examples = load_examples(stsb, "train", data_dir=str(tmp_path))
    assert [(e.text_b, e.label) for e in examples] == [("An air plane is taking off.", 5.0),
                                                       ("A man is playing a bamboo flute.", 3.8)]
    assert isinstance(examples[0].label, float)
    assert load_examples(stsb, "test", data_dir=str(tmp_path))[0].label is None


def _mnli_row(index, sentence1, sentence2, labels):
    return (index, "31193", f"{index}n", "government", "( ( Conceptually cream ) ...", "( Product ...",
            "(ROOT (S ...", "(ROOT (S ...", sentence1, sentence2) + labels


def test_mnli_train_and_both_dev_files(tmp_path):
    parses = ("sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse", "sentence2_parse")
    base = ("index", "promptID", "pairID", "genre") + parses + ("sentence1", "sentence2")
    _write(tmp_path, "train.tsv", _tsv(base + ("label1", "gold_label"),
                                       _mnli_row("0", "Conceptually cream skimming has two dimensions.",
                                                 "Product and geography are what make it work.",
                                                 ("neutral", "neutral"))))
    dev_header = base + ("label1", "label2", "label3", "label4", "label5", "gold_label")
    _write(tmp_path, "dev_matched.tsv", _tsv(dev_header, _mnli_row(
        "0", "The new rights are nice enough", "Everyone really likes the newest benefits ",
        ("neutral", "entailment", "neutral", "neutral", "neutral", "neutral"))))
    _write(tmp_path, "dev_mismatched.tsv", _tsv(dev_header, _mnli_row(
        "0", "Your contribution helped make it possible.", "Your contributions were of no help.",
        ("contradiction",) * 5 + ("contradiction",)), _mnli_row(
        "1", "The Old One always comforted Ca'daan.", "Ca'daan knew the Old One very well.",
        ("entailment",) * 5 + ("entailment",))))
    mnli = get_task("mnli")
    assert mnli.eval_splits == ("validation_matched", "validation_mismatched")
    assert load_examples(mnli, "train", data_dir=str(tmp_path))[0].label == 1
    assert load_examples(mnli, "validation_matched", data_dir=str(tmp_path)) == [ClassificationExample(
        "validation_matched-0", "The new rights are nice enough", "Everyone really likes the newest benefits ", 1)]
    assert [e.label for e in load_examples(mnli, "validation_mismatched", data_dir=str(tmp_path))] == [2, 0]


def test_qnli_rte_wnli_label_order_follows_tfds(tmp_path):
    _write(tmp_path, "dev.tsv", _tsv(("index", "question", "sentence", "label"),
                                     ("0", "What came into force after the new constitution?",
                                      "As of that day, the new constitution came into force.", "entailment"),
                                     ("1", "What is the first major city?", "The stream flows north.",
                                      "not_entailment")))
    assert [(e.text_a[:9], e.label) for e in load_examples(get_task("qnli"), "validation", data_dir=str(tmp_path))] \
        == [("What came", 0), ("What is t", 1)]
    _write(tmp_path, "dev.tsv", _tsv(("index", "sentence1", "sentence2", "label"),
                                     ("0", "The drain is clogged with hair.", "The hair has to be removed.", "1")))
    assert load_examples(get_task("wnli"), "validation", data_dir=str(tmp_path))[0].label == 1
    assert get_task("wnli").label_names[1] == "entailment"
    assert get_task("rte").label_names == ("entailment", "not_entailment")


def test_qqp(tmp_path):
    _write(tmp_path, "train.tsv", _tsv(("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
                                       ("133273", "213221", "213222", "How is the life of a math student?",
                                        "Which level of prepration is enough?", "0")))
    assert load_examples(get_task("qqp"), "train", data_dir=str(tmp_path))[0].label == 0


# ------------------------------------------------------------------ CoNLL, SQuAD, SWAG

_CONLL = ["-DOCSTART- -X- -X- O", "", "EU NNP B-NP B-ORG", "rejects VBZ B-VP O", "German JJ B-NP B-MISC",
          ". . O O", "", "Peter NNP B-NP B-PER", "Blackburn NNP I-NP I-PER", "", "-DOCSTART- -X- -X- O", "",
          "BRUSSELS NNP B-NP B-LOC"]


def test_conll_four_and_two_columns(tmp_path):
    conll = get_task("conll2003")
    assert conll.label_names == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
    _write(tmp_path, "valid.txt", _CONLL)
    expected = [TokenExample("dev-0", ("EU", "rejects", "German", "."), ("B-ORG", "O", "B-MISC", "O")),
                TokenExample("dev-1", ("Peter", "Blackburn"), ("B-PER", "I-PER")),
                TokenExample("dev-2", ("BRUSSELS",), ("B-LOC",))]
    assert load_examples(conll, "dev", data_dir=str(tmp_path)) == expected
    two_columns = [" ".join(line.split()[::3]) if line else line for line in _CONLL]
    _write(tmp_path, "valid.txt", two_columns)
    assert load_examples(conll, "dev", data_dir=str(tmp_path)) == expected


_SQUAD_V1 = {"version": "1.1", "data": [{"title": "University_of_Notre_Dame", "paragraphs": [{
    "context": "Architecturally, the school has a Catholic character. It is a replica of the grotto at Lourdes.",
    "qas": [{"answers": [{"answer_start": 34, "text": "Catholic"}, {"answer_start": 34, "text": "Catholic character"}],
             "question": "What character does the school have?", "id": "5733be284776f41900661182"}]}]}]}

_SQUAD_V2 = {"version": "v2.0", "data": [{"title": "Normans", "paragraphs": [{
    "context": "The Normans were the people who gave their name to Normandy, a region in France.",
    "qas": [{"question": "In what country is Normandy located?", "id": "56ddde6b9a695914005b9628",
             "answers": [{"text": "France", "answer_start": 74}], "is_impossible": False},
            {"plausible_answers": [{"text": "Normans", "answer_start": 4}], "question": "Who gave their name to Paris?",
             "id": "5ad39d53604f3c001a3fe8d1", "answers": [], "is_impossible": True}]}]}]}


def test_squad_v1_and_v2(tmp_path):
    qa = pytest.importorskip("bert_jax.finetuning.qa")
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(_SQUAD_V1))
    (tmp_path / "dev-v2.0.json").write_text(json.dumps(_SQUAD_V2))
    [v1] = load_examples(get_task("squad_v1.1"), "validation", data_dir=str(tmp_path))
    assert v1.qid == "5733be284776f41900661182" and v1.question == "What character does the school have?"
    assert v1.answers == (qa.Answer("Catholic", 34), qa.Answer("Catholic character", 34))
    assert v1.context.startswith("Architecturally") and v1.is_impossible is False
    answerable, impossible = load_examples(get_task("squad_v2.0"), "validation", data_dir=str(tmp_path))
    assert answerable.answers == (qa.Answer("France", 74),) and not answerable.is_impossible
    assert impossible.answers == () and impossible.is_impossible


_SWAG_HEADER = ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3"


def test_swag_csv_with_and_without_labels(tmp_path):
    _write(tmp_path, "val.csv", [
        _SWAG_HEADER + ",label",
        ('0,lsmdc3001,1,"Someone drives the car. He","Someone drives the car.",He,gold,'
         'looks at her.,"steps out, smiling.",waves.,sits down.,1')])
    _write(tmp_path, "test.csv", [_SWAG_HEADER, '0,anetv_x,5,"A man sits. He","A man sits.",He,gen,a,b,c,d'])
    swag = get_task("swag")
    assert swag.tfds_name is None and swag.kind == "multiple_choice"
    assert load_examples(swag, "validation", data_dir=str(tmp_path)) == [ChoiceExample(
        "validation-0", "Someone drives the car.", "He",
        ("looks at her.", "steps out, smiling.", "waves.", "sits down."), 1)]
    assert load_examples(swag, "test", data_dir=str(tmp_path))[0].label is None


# ------------------------------------------------------------------ bad input

def test_registry_matches_tfds_names():
    assert {name: task.tfds_name for name, task in tasks.TASKS.items()} == {
        "cola": "glue/cola", "sst2": "glue/sst2", "mrpc": "glue/mrpc", "qqp": "glue/qqp", "stsb": "glue/stsb",
        "mnli": "glue/mnli", "qnli": "glue/qnli", "rte": "glue/rte", "wnli": "glue/wnli",
        "conll2003": "conll2003", "squad_v1.1": "squad/v1.1", "squad_v2.0": "squad/v2.0", "swag": None}
    assert all(task.kind in tasks.KINDS and task.train_split == "train" and set(task.eval_splits) <= set(task.splits)
               for task in tasks.TASKS.values())


def test_unknown_task_and_split():
    with pytest.raises(InputError, match="unknown fine-tuning task 'glue'; known tasks: cola, sst2"):
        get_task("glue")
    with pytest.raises(InputError, match="task sst2 has no split 'dev'; its splits are train, validation, test"):
        load_examples(get_task("sst2"), "dev", data_dir="/nonexistent")


@pytest.mark.parametrize("task_name, lines, message", [
    ("sst2", _tsv(("sentence", "label"), ("good", "1"), ("bad", "positive ")),
     r"dev.tsv:3: label 'positive ' is not a sst2 label; valid labels: 'negative' \(or 0\), 'positive' \(or 1\)"),
    ("sst2", _tsv(("sentence", "label"), ("good", "2")), r"dev.tsv:2: label '2' is not a sst2 label"),
    ("mnli_dev", _tsv(("sentence1", "sentence2", "gold_label"), ("a", "b", "entailed")),
     r"dev_matched.tsv:2: label 'entailed' is not a mnli label; valid labels: 'entailment' \(or 0\)"),
    ("stsb", _tsv(("sentence1", "sentence2", "score"), ("a", "b", "high")),
     r"dev.tsv:2: score 'high' is not a number"),
    ("sst2", _tsv(("sentence", "label"), ("good", "1"), ("a\tstray tab", "1")),
     r"dev.tsv:3: 3 tab-separated columns where sst2 has 2 \(sentence/label\); fix or delete that row"),
    ("sst2", _tsv(("text", "label"), ("good", "1")), r"dev.tsv:1: the header text/label has no column 'sentence'"),
    ("sst2", [], r"dev.tsv is empty"),
    ("sst2", _tsv(("sentence", "label")), r"dev.tsv has no examples"),
    ("conll2003", ["EU NNP B-NP B-ORG", "rejects VBZ B-VP B-PERSON"],
     r"valid.txt:2: NER tag 'B-PERSON' is not a conll2003 tag; valid tags: O, B-PER, I-PER"),
    ("conll2003", ["EU NNP B-NP B-ORG", "rejects VBZ O"], r"valid.txt:2: 3 columns in 'rejects VBZ O' where the file"),
    ("conll2003", ["EU"], r"valid.txt:1: 1 columns in 'EU' where needs 2 or 4"),
    ("conll2003", ["-DOCSTART- -X- -X- O", ""], r"valid.txt has no examples"),
    ("swag", [_SWAG_HEADER + ",label", "0,v,1,s,s1,s2,gold,a,b,c,d,4"],
     r"val.csv:2: label '4' is not a swag label; valid labels: '0' \(or 0\)"),
    ("swag", [_SWAG_HEADER + ",label", "0,v,1,s,s1,s2,gold,a,b,c,1"], r"val.csv:2: 11 comma-separated columns"),
    ("swag", ["sent1,sent2,label"], r"val.csv:1: the header has no column 'ending0'"),
])
def test_bad_local_files(tmp_path, task_name, lines, message):
    task = get_task("mnli" if task_name == "mnli_dev" else task_name)
    split = task.eval_splits[0]
    _write(tmp_path, task.local_files[split], lines)
    with pytest.raises(InputError, match=message) as error:
        load_examples(task, split, data_dir=str(tmp_path))
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)


def test_missing_file_names_file_and_data_dir(tmp_path):
    with pytest.raises(InputError, match=rf"mnli validation_matched file {tmp_path}/dev_matched.tsv not found; "
                                         rf"put the mnli files \(train.tsv, dev_matched.tsv, .*\) in "
                                         rf"data_dir='{tmp_path}', or leave data_dir empty to read TFDS glue/mnli"):
        load_examples(get_task("mnli"), "validation_matched", data_dir=str(tmp_path))


@pytest.mark.parametrize("content, message", [
    ('{"version": "1.1", "articles": []}', r"dev-v1.1.json is not SQuAD JSON: it has no top-level 'data' list"),
    ('{"data": [\n{"title": "x",}]}', r"dev-v1.1.json:2: not valid JSON"),
    ('{"data": [{"paragraphs": [{"context": "abc", "qas": [{"id": "q1", "answers": []}]}]}]}',
     r"dev-v1.1.json: question id 'q1': not in SQuAD form \(KeyError: 'question'\)"),
    (json.dumps({"data": [{"paragraphs": [{"context": "abc", "qas": [
        {"id": "q1", "question": "?", "answers": [{"text": "bc", "answer_start": 2}]}]}]}]}),
     r"question id 'q1': answer_start 2 puts 'bc' outside"),
    ('{"data": []}', r"dev-v1.1.json has no examples"),
])
def test_bad_squad_json(tmp_path, content, message):
    pytest.importorskip("bert_jax.finetuning.qa")
    (tmp_path / "dev-v1.1.json").write_text(content)
    with pytest.raises(InputError, match=message):
        load_examples(get_task("squad_v1.1"), "validation", data_dir=str(tmp_path))


# ------------------------------------------------------------------ TFDS

@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to reach the network or prepare a dataset")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


@pytest.mark.parametrize("task_name", ["sst2", "mnli", "conll2003", "squad_v2.0"])
def test_tfds_not_prepared_says_how_to_prepare(tmp_path, no_network, task_name):
    task = get_task(task_name)
    with pytest.raises(InputError) as error:
        load_examples(task, "train", tfds_data_dir=str(tmp_path))
    assert str(error.value) == (
        f"TFDS dataset {task.tfds_name} is not prepared in {tmp_path}; prepare it where there is network with "
        f"`tfds build {task.tfds_name} --file_format=array_record --data_dir={tmp_path}` (and copy that directory "
        f"here), or pass the local {task.name} files ({', '.join(task.local_files.values())}) with "
        "--config.data.data_dir.")
    assert os.listdir(tmp_path) == []


def test_tfds_for_swag_points_to_local_files(tmp_path):
    with pytest.raises(InputError, match=r"task swag has no TFDS dataset; pass the local swag files \(train.csv"):
        load_examples(get_task("swag"), "train", tfds_data_dir=str(tmp_path))


def _glue_features(*text_features, label_names):
    return {**{name: tfds.features.Text() for name in text_features},
            "label": tfds.features.ClassLabel(names=label_names), "idx": np.int32}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A TFDS data dir with tiny glue/sst2, glue/rte (label order swapped), conll2003 and squad/v2.0."""
    data_dir = tmp_path_factory.mktemp("tfds")
    sst2 = _glue_features("sentence", label_names=["negative", "positive"])
    prepare_fake_tfds(data_dir, "glue", "sst2", sst2,
                      {"train": [{"sentence": "a gorgeous film", "label": 1, "idx": 7},
                                 {"sentence": "dull", "label": 0, "idx": 8}],
                       "test": [{"sentence": "héllo", "label": -1, "idx": 0}]}, version="2.0.0")
    prepare_fake_tfds(data_dir, "glue", "rte",
                      _glue_features("sentence1", "sentence2", label_names=["not_entailment", "entailment"]),
                      {"validation": [{"sentence1": "p", "sentence2": "h", "label": "entailment", "idx": 0}]},
                      version="2.0.0")
    conll = tfds.features.Sequence(tfds.features.ClassLabel(names=list(tasks.CONLL2003_TAGS)))
    prepare_fake_tfds(data_dir, "conll2003", "conll2003",
                      {"tokens": tfds.features.Sequence(tfds.features.Text()), "ner": conll},
                      {"dev": [{"tokens": ["EU", "rejects"], "ner": ["B-ORG", "O"]},
                               {"tokens": ["Peter"], "ner": ["B-PER"]}]})
    answers = tfds.features.Sequence({"text": tfds.features.Text(), "answer_start": np.int32})
    squad_features = {"id": np.str_, "title": tfds.features.Text(), "context": tfds.features.Text(),
                      "plausible_answers": answers, "question": tfds.features.Text(), "is_impossible": np.bool_,
                      "answers": answers}
    prepare_fake_tfds(data_dir, "squad", "v2.0", squad_features, {"validation": [
        {"id": "q1", "title": "T", "context": "Normandy is in France.", "question": "Where?", "is_impossible": False,
         "answers": {"text": ["France", "France"], "answer_start": [15, 15]},
         "plausible_answers": {"text": [], "answer_start": []}},
        {"id": "q2", "title": "T", "context": "Normandy is in France.", "question": "Who?", "is_impossible": True,
         "answers": {"text": [], "answer_start": []},
         "plausible_answers": {"text": ["Normandy"], "answer_start": [0]}}]}, version="3.0.0")
    return str(data_dir)


def test_tfds_glue(tfds_dir, no_network):
    sst2 = get_task("sst2")
    assert load_examples(sst2, "train", tfds_data_dir=tfds_dir) == [
        ClassificationExample("train-7", "a gorgeous film", None, 1), ClassificationExample("train-8", "dull", None, 0)]
    assert load_examples(sst2, "train", tfds_data_dir=tfds_dir, max_examples=1) == [
        ClassificationExample("train-7", "a gorgeous film", None, 1)]
    assert load_examples(sst2, "test", tfds_data_dir=tfds_dir) == [
        ClassificationExample("test-0", "héllo", None, None)]
    # TFDS class 1 is 'entailment', which is 0 for rte: ids follow the task's label names.
    assert load_examples(get_task("rte"), "validation", tfds_data_dir=tfds_dir) == [
        ClassificationExample("validation-0", "p", "h", 0)]
    with pytest.raises(InputError, match=r"TFDS glue/sst2 in .* has no split 'validation'; it has train, test"):
        load_examples(sst2, "validation", tfds_data_dir=tfds_dir)


def test_tfds_conll2003(tfds_dir, no_network):
    assert load_examples(get_task("conll2003"), "dev", tfds_data_dir=tfds_dir) == [
        TokenExample("dev-0", ("EU", "rejects"), ("B-ORG", "O")), TokenExample("dev-1", ("Peter",), ("B-PER",))]


def test_tfds_squad_v2(tfds_dir, no_network):
    qa = pytest.importorskip("bert_jax.finetuning.qa")
    answerable, impossible = load_examples(get_task("squad_v2.0"), "validation", tfds_data_dir=tfds_dir)
    assert answerable == qa.QAExample("q1", "Where?", "Normandy is in France.",
                                      (qa.Answer("France", 15), qa.Answer("France", 15)), False)
    assert impossible == qa.QAExample("q2", "Who?", "Normandy is in France.", (), True)


def test_a_test_split_without_labels_reads_as_unlabelled(tmp_path):
    """GLUE's test.tsv has no label column: its examples carry None, while train/dev files must have labels."""
    from bert_jax.finetuning import task_files
    path = tmp_path / "test.tsv"
    path.write_text("index\tsentence\n0\ta fine film\n1\ta dull one\n", encoding="utf-8")
    examples = task_files.read_glue_tsv(str(path), tasks.TASKS["sst2"], "test")
    assert [e.label for e in examples] == [None, None] and examples[1].text_a == "a dull one"
    with pytest.raises(InputError, match="no label column 'label', but the validation split is scored"):
        task_files.read_glue_tsv(str(path), tasks.TASKS["sst2"], "validation")
