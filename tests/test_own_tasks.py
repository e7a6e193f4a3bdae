"""Tasks on the user's own files: reading CSV / TSV / JSON Lines / CoNLL / SQuAD JSON for every task kind,
label sets read from the data in a stable order, errors that name file, line and fix, and fine-tunes
end to end on own files (test scores from the checkpoint chosen on dev, a self-contained model directory).
"""

import gzip
import json
import random

import pytest
from conftest import _WORDS
from test_runner import _export_random_encoder

from bert_jax.config import InputError
from bert_jax.finetuning import config as finetune_config
from bert_jax.finetuning import model_dir, own_tasks, prediction, runner, tasks

FILLER = [w for w in _WORDS if w not in ("gold", "king", "queen", "city", "village")]


def _config(task, train, validation="", test="", **data):
    config = finetune_config.default_config()
    config.task = task
    config.data.train_file, config.data.validation_file, config.data.test_file = map(str, (train, validation, test))
    for name, value in data.items():
        config.data[name] = value
    return config


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def _examples(config, split):
    task = tasks.resolve_task(config)
    return task, tasks.load_examples(task, split)


# ------------------------------------------------------------------ label sets and formats

def test_string_labels_are_sorted_and_ids_follow_the_stored_order(tmp_path):
    train = _write(tmp_path / "train.tsv", "text\tlabel\nfirst\tsports\nsecond\tarts\nthird\tworld\nfourth\tarts\n")
    task, examples = _examples(_config("classification", train), "train")
    assert task.label_names == ("arts", "sports", "world")
    assert [e.label for e in examples] == [1, 0, 2, 0]


def test_numeric_labels_sort_numerically_and_json_ints_equal_csv_digits(tmp_path):
    train = _write(tmp_path / "train.jsonl", "\n".join(json.dumps({"text": f"t{i}", "label": v})
                                                       for i, v in enumerate([10, 2, -1, 2])) + "\n")
    dev = _write(tmp_path / "dev.csv", "text,label\nx,10\ny,-1\n")
    task, examples = _examples(_config("classification", train, dev), "train")
    assert task.label_names == ("-1", "2", "10")
    assert [e.label for e in examples] == [2, 1, 0, 1]
    assert [e.label for e in tasks.load_examples(task, "validation")] == [2, 0]


def test_given_label_names_fix_the_order_and_refuse_others(tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\na,neg\nb,pos\n")
    config = _config("classification", train, label_names=("pos", "neg", "neutral"))
    task, examples = _examples(config, "train")
    assert task.label_names == ("pos", "neg", "neutral") and [e.label for e in examples] == [1, 0]
    config.data.label_names = ("pos", "neutral")
    with pytest.raises(InputError, match=r"train.csv:2: label 'neg' is not one of"):
        _examples(config, "train")


def test_text_pairs_and_quoted_csv_fields(tmp_path):
    train = _write(tmp_path / "train.csv", 'premise,hypothesis,label\n"A, quoted ""one""",plain,yes\nb,c,no\n')
    task, examples = _examples(_config("classification", train, text_column="premise",
                                       text_pair_column="hypothesis"), "train")
    assert (examples[0].text_a, examples[0].text_b) == ('A, quoted "one"', "plain")
    assert task.label_names == ("no", "yes")


def test_tsv_keeps_quotes_as_text(tmp_path):
    train = _write(tmp_path / "train.tsv", 'text\tlabel\n"Great" film\tpos\nbad\tneg\n')
    _, examples = _examples(_config("classification", train), "train")
    assert examples[0].text_a == '"Great" film'


def test_regression_scores_and_unlabelled_test_file(tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\na,1.5\nb,-2\n")
    test = _write(tmp_path / "test.csv", "text\nc\n")
    task, examples = _examples(_config("regression", train, test=test), "train")
    assert [e.label for e in examples] == [1.5, -2.0] and task.label_names == ()
    assert tasks.load_examples(task, "test")[0].label is None


def test_multi_label_from_separated_cells_and_json_lists(tmp_path):
    train = _write(tmp_path / "train.csv", 'text,label\na,"x,y"\nb,\nc,z\n')
    task, examples = _examples(_config("multi_label_classification", train), "train")
    assert task.label_names == ("x", "y", "z")
    assert [e.label for e in examples] == [(0, 1), (), (2,)]
    train_json = _write(tmp_path / "train.jsonl", '{"text": "a", "label": ["z", "x"]}\n{"text": "b", "label": []}\n')
    dev = _write(tmp_path / "dev.jsonl", '{"text": "a", "label": ["x", "w"]}\n')
    task, examples = _examples(_config("multi_label_classification", train_json, dev), "train")
    assert [e.label for e in examples] == [(0, 1), ()]
    with pytest.raises(InputError, match=r"dev.jsonl:1: label 'w' is not one of"):
        tasks.load_examples(task, "validation")


# ------------------------------------------------------------------ errors name file, line and fix

@pytest.mark.parametrize("text, fmt, message", [
    ("text\tlabel\na\tpos\nb\t3\n", "tsv", r"mixed label types: line 3 has the number '3', line 2 the name 'pos'"),
    ("words\tlabel\na\tpos\nb\tneg\n", "tsv", r"no column 'text' \(text_column\); the file has columns 'words', 'label'"),
    ("", "tsv", r"is empty"),
    ("text\tlabel\n", "tsv", r"header but no rows"),
    ("text\tlabel\na\tpos\textra\n", "tsv", r"train.tsv:2: 3 tab-separated fields where the header has 2"),
    ("text,label\na,pos\nb,\n", "csv", r"train.csv:3: the label is empty"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": 1.5}\n', "jsonl", r"train.jsonl:2: label 1.5 is a float"),
    ('{"text": "a", "label": "x"}\n{"text": "b"\n', "jsonl", r"train.jsonl:2: not valid JSON"),
    ('{"text": "a", "label": "x"}\n"text"\n', "jsonl", r"train.jsonl:2: a JSON str where an object"),
    ("text,text,label\na,b,c\n", "csv", r"names column 'text' twice"),
    ("text,label\na,spam\nb,spam\n", "csv", r"every example has the label 'spam'; a classifier needs at least two"),
    ("text,label\na,3.5\nb,4.25\n", "csv", r"the labels look like scores \(3.5, 4.25, ...\).*config.task='regression'"),
])
def test_bad_training_files_name_the_line_and_the_fix(tmp_path, text, fmt, message):
    path = _write(tmp_path / f"train.{fmt}", text)
    with pytest.raises(InputError, match=message):
        tasks.resolve_task(_config("classification", path))


def test_dev_label_unseen_in_training_names_file_and_line(tmp_path):
    train = _write(tmp_path / "train.tsv", "text\tlabel\na\tpos\nb\tneg\n")
    dev = _write(tmp_path / "dev.tsv", "text\tlabel\nc\tpos\nd\tneutral\n")
    task = tasks.resolve_task(_config("classification", train, dev))
    with pytest.raises(InputError, match=r"dev.tsv:3: label 'neutral' is not one of the training file's labels "
                                         r"\('neg', 'pos'\).*add examples of it"):
        tasks.load_examples(task, "validation")


def test_file_in_another_encoding_is_named(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("text,label\ncaf\u00e9,x\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"train.csv:2: byte 0xe9 is not UTF-8.*iconv"):
        tasks.resolve_task(_config("classification", path))


def test_unknown_extension_and_benchmark_with_own_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="cannot tell the format.*file_format"):
        tasks.resolve_task(_config("classification", _write(tmp_path / "train.dat", "x")))
    config = _config("sst2", _write(tmp_path / "train.csv", "text,label\na,b\n"))
    with pytest.raises(InputError, match="config.data.train_file is set, but config.task='sst2' is a benchmark"):
        tasks.resolve_task(config)
    with pytest.raises(InputError, match="train_file is empty"):
        tasks.resolve_task(_config("classification", ""))


# ------------------------------------------------------------------ token classification

CONLL = "EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\nPeter B-PER\nBlackburn I-PER\n"


def test_conll_tags_are_read_with_their_scheme_detected(tmp_path):
    task, examples = _examples(_config("token_classification", _write(tmp_path / "train.conll", CONLL)), "train")
    assert task.tag_scheme == "BIO" and task.label_names == ("B-MISC", "B-ORG", "B-PER", "I-PER", "O")
    assert examples[1].words == ("Peter", "Blackburn") and examples[1].labels == ("B-PER", "I-PER")
    iob1 = _write(tmp_path / "iob1.conll", "Peter I-PER\nBlackburn I-PER\nran O\n")
    assert tasks.resolve_task(_config("token_classification", iob1)).tag_scheme == "IOB1"
    iobes = _write(tmp_path / "iobes.conll", "Peter B-PER\nBlackburn E-PER\nin O\nParis S-LOC\n")
    assert tasks.resolve_task(_config("token_classification", iobes)).tag_scheme == "IOBES"


def test_declared_bio_refuses_an_inside_tag_that_starts_an_entity_and_says_how_it_is_read(tmp_path):
    path = _write(tmp_path / "train.conll", "the O\nPeter I-PER\n")
    with pytest.raises(InputError, match=r"train.conll:1: tag 'I-PER' \(token 2\) follows 'O'; with tag_scheme='BIO'"
                                         r".*IOB1: set --config.data.tag_scheme=IOB1"):
        tasks.resolve_task(_config("token_classification", path, tag_scheme="BIO"))
    with pytest.raises(InputError, match="not closed by E-"):
        tasks.resolve_task(_config("token_classification", _write(tmp_path / "e.conll", "a B-X\nb O\n"),
                                   tag_scheme="IOBES"))
    with pytest.raises(InputError, match=r"tag 'PER' is not O or PREFIX-TYPE"):
        tasks.resolve_task(_config("token_classification", _write(tmp_path / "p.conll", "a PER\nb O\n")))


def test_token_jsonl_with_numeric_tags_needs_and_uses_label_names(tmp_path):
    path = _write(tmp_path / "train.jsonl", '{"tokens": ["Peter", "runs"], "tags": [1, 0]}\n')
    with pytest.raises(InputError, match="tag 1 is a number; give the tag names"):
        tasks.resolve_task(_config("token_classification", path))
    task, examples = _examples(_config("token_classification", path, label_names=("O", "B-PER")), "train")
    assert examples[0].labels == ("B-PER", "O")
    tsv = _write(tmp_path / "train.tsv", "tokens\ttags\nPeter runs\tB-PER\n")
    with pytest.raises(InputError, match=r"train.tsv:2: 2 tokens but 1 tags"):
        tasks.resolve_task(_config("token_classification", tsv))


# ------------------------------------------------------------------ multiple choice, QA

def test_multiple_choice_columns_are_found_and_labels_checked(tmp_path):
    train = _write(tmp_path / "train.csv", "context,choice0,choice1,choice2,label\nc,a,b,d,2\n")
    _, examples = _examples(_config("multiple_choice", train), "train")
    assert examples[0].choices == ("a", "b", "d") and examples[0].label == 2
    bad = _write(tmp_path / "bad.jsonl", '{"context": "c", "choices": ["a", "b"], "label": 2}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: label 2 is not the number of a choice \(0 to 1\)"):
        tasks.resolve_task(_config("multiple_choice", bad))


def test_qa_reads_squad_json_and_detects_unanswerable_questions(tmp_path):
    def squad(answers):
        return json.dumps({"data": [{"paragraphs": [{"context": "The cat sat.", "qas": [
            {"id": "q1", "question": "Who sat?", "answers": answers}]}]}]})
    task = tasks.resolve_task(_config("qa", _write(tmp_path / "v1.json", squad([{"text": "cat", "answer_start": 4}]))))
    assert not task.version_2
    assert tasks.resolve_task(_config("qa", _write(tmp_path / "v2.json", squad([])))).version_2
    with pytest.raises(InputError, match="extractive QA reads SQuAD JSON"):
        tasks.resolve_task(_config("qa", _write(tmp_path / "q.csv", "question,context\na,b\n")))


# ------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, small_tokenizer):
    return _export_random_encoder(tmp_path_factory.mktemp("own_pretrained") / "export", small_tokenizer)


_TOPICS = {"gold": "money", "king": "royalty", "city": "places", "village": "country"}


def _topic_rows(count, seed, multi=False):
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 8))]
        keys = list(_TOPICS)[i % 4:i % 4 + 1] + ([list(_TOPICS)[(i + 1) % 4]] if multi and i % 3 == 0 else [])
        for key in keys:
            words.insert(rng.randrange(len(words) + 1), key)
        rows.append((" ".join(words), [_TOPICS[k] for k in keys]))
    return rows


def _train_config(config, pretrained, epochs=8.0):
    config.init_checkpoint = pretrained
    config.data.max_seq_length = 32
    config.train.update({"global_batch_size": 16, "eval_batch_size": 32, "num_train_epochs": epochs,
                         "learning_rate": 1e-3, "log_every_steps": 1000})
    return config


def test_own_classification_with_string_labels_reports_test_score_of_the_dev_choice(pretrained, tmp_path):
    files = {}
    for split, count, seed in (("train", 256, 0), ("dev", 64, 1), ("test", 64, 2)):
        lines = "".join(f"{text}\t{labels[0]}\n" for text, labels in _topic_rows(count, seed))
        files[split] = _write(tmp_path / f"{split}.tsv", "text\tlabel\n" + lines)
    config = _train_config(_config("classification", files["train"], files["dev"], files["test"]), pretrained)
    workdir = tmp_path / "run"
    report = runner.finetune(config, str(workdir))
    assert report["label_names"] == ["country", "money", "places", "royalty"]
    best = report["seeds"][0]
    assert best["best"]["validation"]["accuracy"] > 0.9
    assert report["test"]["accuracy"] > 0.9 and set(report["test"]) >= {"accuracy", "macro_f1", "mcc"}
    assert json.loads((workdir / "metrics.json").read_text())["test"] == report["test"]
    lines = (workdir / "seed_0" / "predictions_test.tsv").read_text().splitlines()
    assert lines[0] == "guid\tprediction" and lines[1].split("\t")[1] in report["label_names"]
    model = model_dir.load(str(workdir))
    assert model.task.label_names == ("country", "money", "places", "royalty")
    assert model.task.kind == "classification" and model.settings["max_seq_length"] == 32
    assert model.info["best_step"] == best["best_step"]
    with pytest.raises(InputError, match="already holds a finished fine-tune"):
        runner.finetune(config, str(workdir))
    # predict on the test file gives the fine-tune's own test predictions and score
    predicted = prediction.predict_file(str(workdir), str(files["test"]), str(tmp_path / "p.jsonl"), top_k=2)
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [line.split("\t")[1] for line in lines[1:]]
    assert predicted["metrics"]["accuracy"] == pytest.approx(report["test"]["accuracy"])


@pytest.mark.slow  # kept out of the 20-minute CI; run with -m slow
def test_own_multi_label_learns_several_labels_per_example(pretrained, tmp_path):
    files = {}
    for split, count, seed in (("train", 320, 3), ("dev", 64, 4)):
        rows = [{"text": text, "label": labels} for text, labels in _topic_rows(count, seed, multi=True)]
        files[split] = _write(tmp_path / f"{split}.jsonl", "\n".join(map(json.dumps, rows)) + "\n")
    config = _train_config(_config("multi_label_classification", files["train"], files["dev"]), pretrained, 10.0)
    report = runner.finetune(config, str(tmp_path / "run"))
    dev = report["seeds"][0]["best"]["validation"]
    assert dev["micro_f1"] > 0.85 and dev["exact_match"] > 0.6, dev
    assert report["primary_metric"] == "micro_f1"


@pytest.mark.slow  # kept out of the 20-minute CI; run with -m slow
def test_own_token_classification_with_iobes_tags(pretrained, tmp_path):
    rng = random.Random(5)

    def sentence():
        words = [rng.choice(FILLER) for _ in range(rng.randint(4, 8))]
        tags = ["O"] * len(words)
        at = rng.randrange(len(words) - 1)
        words[at:at + 2], tags[at:at + 2] = ["king", "gold"], ["B-ROY", "E-ROY"]
        single = rng.randrange(len(words))
        if tags[single] == "O":
            words[single], tags[single] = "city", "S-LOC"
        return {"tokens": words, "tags": tags}

    for split, count in (("train", 256), ("dev", 48)):
        _write(tmp_path / f"{split}.jsonl", "\n".join(json.dumps(sentence()) for _ in range(count)) + "\n")
    config = _train_config(_config("token_classification", tmp_path / "train.jsonl", tmp_path / "dev.jsonl"),
                           pretrained)
    report = runner.finetune(config, str(tmp_path / "run"))
    assert report["label_names"] == ["B-ROY", "E-ROY", "O", "S-LOC"]
    assert report["seeds"][0]["best"]["validation"]["f1"] > 0.9
    assert model_dir.load(str(tmp_path / "run")).task.tag_scheme == "IOBES"


def test_without_a_validation_file_the_last_step_is_kept(pretrained, tmp_path):
    rows = "".join(f"{t}\t{ls[0]}\n" for t, ls in _topic_rows(32, 6))
    config = _train_config(_config("classification", _write(tmp_path / "train.tsv", "text\tlabel\n" + rows)),
                           pretrained, 1.0)
    report = runner.finetune(config, str(tmp_path / "run"))
    assert report["seeds"][0]["best_step"] == report["seeds"][0]["num_train_steps"] == 2
    assert report["seeds"][0]["best"] == {} and "test" not in report
    assert model_dir.load(str(tmp_path / "run")).info["best_step"] == 2


def test_a_fine_tuned_model_is_a_starting_point_for_another_task(pretrained, tmp_path):
    rows = "".join(f"{t}\t{ls[0]}\n" for t, ls in _topic_rows(32, 7))
    first = _train_config(_config("classification", _write(tmp_path / "a.tsv", "text\tlabel\n" + rows)),
                          pretrained, 1.0)
    runner.finetune(first, str(tmp_path / "first"))
    scores = "".join(f"{t}\t{len(t) / 10}\n" for t, _ in _topic_rows(32, 8))
    second = _train_config(_config("regression", _write(tmp_path / "b.tsv", "text\tlabel\n" + scores)),
                           str(tmp_path / "first"), 1.0)
    report = runner.finetune(second, str(tmp_path / "second"))
    assert report["init_checkpoint"] == str(tmp_path / "first" / "model")
    encoder = model_dir.load(str(tmp_path / "first")).params["bert"]["embeddings"]["word_embeddings"]["embedding"]
    assert encoder.shape[0] == 320


# ------------------------------------------------------------------ cases a hostile user tried

def test_numbers_written_differently_are_the_same_label(tmp_path):
    train = _write(tmp_path / "train.tsv", "text\tlabel\na\t01\nb\t+1\nc\t10\nd\t2\n")
    task, examples = _examples(_config("classification", train), "train")
    assert task.label_names == ("1", "2", "10") and [e.label for e in examples] == [0, 0, 2, 1]


def test_float_like_classes_train_when_listed_and_booleans_are_classes(tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\na,0.0\nb,1.0\n")
    task, examples = _examples(_config("classification", train, label_names=("0.0", "1.0")), "train")
    assert [e.label for e in examples] == [0, 1]
    boolean = _write(tmp_path / "b.jsonl", '{"text": "a", "label": true}\n{"text": "b", "label": false}\n')
    task, examples = _examples(_config("classification", boolean), "train")
    assert task.label_names == ("false", "true") and [e.label for e in examples] == [1, 0]


def test_label_names_leaving_out_a_training_label_name_the_row(tmp_path):
    train = _write(tmp_path / "train.tsv", "text\tlabel\na\tpos\nb\tneg\n")
    with pytest.raises(InputError, match="lists fewer than two labels"):
        tasks.resolve_task(_config("classification", train, label_names=("pos",)))
    with pytest.raises(InputError, match=r"train.tsv:3: label 'neg' is not one of"):
        tasks.resolve_task(_config("classification", train, label_names=("pos", "neutral")))


def test_rows_without_tags_nested_text_and_compressed_or_directory_files(tmp_path):
    tokens = _write(tmp_path / "t.jsonl", '{"tokens": ["a"], "tags": ["B-X"]}\n{"tokens": ["b"]}\n'
                                          '{"tokens": ["c"], "tags": ["O"]}\n')
    with pytest.raises(InputError, match=r"t.jsonl:2: no 'tags' value"):
        tasks.resolve_task(_config("token_classification", tokens))
    task = tasks.resolve_task(_config("token_classification", _write(tmp_path / "ok.jsonl",
                                                                     '{"tokens": ["a", "b"], "tags": ["B-X", "O"]}\n')))
    assert own_tasks.examples_from_file(task, str(tokens), "predict", labelled=False)[1].labels is None
    nested = _write(tmp_path / "n.jsonl", '{"text": {"body": "x"}, "label": "a"}\n{"text": "y", "label": "b"}\n')
    with pytest.raises(InputError, match=r"n.jsonl:1: the 'text' value is a JSON dict, not text"):
        tasks.resolve_task(_config("classification", nested))
    packed = tmp_path / "train.tsv.gz"
    packed.write_bytes(gzip.compress(b"text\tlabel\na\tb\n"))
    with pytest.raises(InputError, match=r"is gzip-compressed: decompress it first \(`gunzip"):
        tasks.resolve_task(_config("classification", packed, file_format="tsv"))
    with pytest.raises(InputError, match="is a directory"):
        tasks.resolve_task(_config("classification", tmp_path))


def test_json_array_errors_name_the_line_of_the_element(tmp_path):
    rows = [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}, {"text": "c", "label": ["x"]}]
    path = _write(tmp_path / "train.json", json.dumps(rows, indent=2))
    with pytest.raises(InputError, match=r"train.json:10: the label is a list"):
        tasks.resolve_task(_config("classification", path))


def test_multiple_choice_empty_choice_cell_and_uneven_rows_name_the_line(tmp_path):
    blank = _write(tmp_path / "m.csv", "context,choice0,choice1,choice2,label\nc,a,b,d,0\nc,a,b,,1\n")
    with pytest.raises(InputError, match=r"m.csv:3: choice column 'choice2' is empty"):
        tasks.resolve_task(_config("multiple_choice", blank))
    uneven = _write(tmp_path / "m.jsonl", '{"context": "c", "choices": ["a", "b"], "label": 0}\n'
                                          '{"context": "c", "choices": ["a", "b", "d"], "label": 0}\n')
    with pytest.raises(InputError, match=r"m.jsonl:2: 3 choices where the first row has 2"):
        tasks.resolve_task(_config("multiple_choice", uneven))


def test_predict_reads_other_column_names_refuses_a_directory_and_an_unfinished_fine_tune(pretrained, tmp_path):
    rows = "".join(f"{t}\t{ls[0]}\n" for t, ls in _topic_rows(32, 9))
    config = _train_config(_config("classification", _write(tmp_path / "train.tsv", "text\tlabel\n" + rows)),
                           pretrained, 1.0)
    runner.finetune(config, str(tmp_path / "run"))
    other = _write(tmp_path / "other.csv", "id,body\n1,gold coin\n2,a king\n")
    with pytest.raises(InputError, match=r"no column 'text' \(text_column\).*name the right one with "
                                         r"--columns=text_column="):
        prediction.predict_file(str(tmp_path / "run"), str(other), str(tmp_path / "p.jsonl"))
    prediction.predict_file(str(tmp_path / "run"), str(other), str(tmp_path / "p.jsonl"),
                            columns=prediction.parse_columns("text_column=body"))
    assert [json.loads(line)["text"] for line in (tmp_path / "p.jsonl").read_text().splitlines()] == \
        ["gold coin", "a king"]
    with pytest.raises(InputError, match="is a directory; give a file name"):
        prediction.predict_file(str(tmp_path / "run"), str(other), str(tmp_path))
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / model_dir.FINETUNE_RECORD).write_text("{}")
    with pytest.raises(InputError, match="a fine-tune that has not finished.*run the same"):
        model_dir.load(str(tmp_path / "unfinished"))
