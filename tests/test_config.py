"""The config schema: `validate` names the field and the fix; stored configs load on today's defaults."""

import json

import ml_collections
import pytest

from bert_jax import config as config_lib


@pytest.mark.parametrize("overrides,message", [
    ({"model.num_attention_heads": 5}, "not divisible by config.model.num_attention_heads"),
    ({"data.max_seq_length": 1024}, "larger than config.model.max_position_embeddings"),
    ({"data.tokenizer_vocab_size": 40_000}, "raise the model's vocab_size or train a smaller tokenizer"),
    ({"data.instance_format": "full_sentences"}, "needs config.objective='mlm'"),
    ({"model.num_hidden_groups": 5}, "must be 0 \\(no sharing\\) or divide"),
    ({"masking.kind": "words"}, "is not one of"),
    ({"train.warmup_steps": 2_000_000}, "must be within"),
    ({"checkpoint.max_to_keep": 0}, "max_to_keep must be at least 1"),
    ({"checkpoint.max_to_keep": -2}, "max_to_keep must be at least 1"),
    ({"data.eval_num_examples": 0}, "eval_num_examples must be at least 1"),
])
def test_invalid_configs_name_the_problem(overrides, message):
    config = config_lib.default_config()
    for path, value in overrides.items():
        group, name = path.split(".")
        config[group][name] = value
    with pytest.raises(config_lib.InputError, match=message):
        config_lib.validate(config)


def test_every_recipe_file_validates():
    import importlib.util
    import pathlib
    for path in sorted(pathlib.Path(__file__).resolve().parents[1].glob("configs/*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config_lib.validate(module.get_config())  # raises InputError naming the field if a recipe is wrong


def test_a_stored_config_round_trips_and_old_ones_take_todays_defaults():
    config = config_lib.default_config()
    config.model.hidden_size, config.masking.kind = 64, "whole_word"
    stored = json.loads(config.to_json())
    assert config_lib.from_stored(stored).to_dict() == config.to_dict()
    del stored["model"]["scan_layers"], stored["data"]["pack_sequences"]  # as written before those fields existed
    restored = config_lib.from_stored(stored)
    assert restored.model.hidden_size == 64 and restored.masking.kind == "whole_word"
    assert restored.model.scan_layers == config_lib.default_config().model.scan_layers
    assert restored.data.pack_sequences == config_lib.default_config().data.pack_sequences


def test_bad_values_are_input_errors_not_tracebacks():
    config = config_lib.default_config()
    config.model.hidden_size = 130  # not divisible by the 12 default heads
    with pytest.raises(config_lib.InputError, match=r"config.model.hidden_size \(130\)"):
        config_lib.validate(config)


def test_allow_changed_data_is_a_validated_switch_that_defaults_off():
    assert config_lib.default_config().train.allow_changed_data is False
    values = config_lib.default_config().to_dict()
    values["train"]["allow_changed_data"] = "yes"
    with pytest.raises(config_lib.InputError, match=r"config\.train\.allow_changed_data='yes' is of type str, but "
                                                    r"the field takes bool values"):
        config_lib.validate(ml_collections.ConfigDict(values))
