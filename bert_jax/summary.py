"""Parameter counts, training FLOPs per token and memory of a config, without building it for real.

python -m bert_jax.summary --config=configs/albert_base.py [--config.mesh.fsdp=8]
Prints a table and, as the last line, one JSON object (config, total_params, encoder_params, ...,
param_and_optimizer_bytes_per_device for the config's mesh.fsdp).
"""

import json
import sys

from absl import flags
from ml_collections import config_flags

from bert_jax import cli
from bert_jax import config as config_lib
from bert_jax.tools import model_stats

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).")
flags.mark_flags_as_required(["config"])


def _human(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def main(argv):
    cli.refuse_extra_arguments(argv)
    try:
        config = config_lib.validate(_CONFIG.value)
    except config_lib.InputError as e:
        sys.exit(f"error: {e}")
    name = flags.FLAGS["config"].config_filename
    parts = model_stats.parameter_breakdown(config)
    flops = model_stats.training_flops_per_token(config)
    memory = model_stats.memory_bytes(parts["total_params"])
    per_device = model_stats.per_device_memory_bytes(config)
    m = config.model
    sharing = f", {m.num_hidden_groups} shared group(s)" if m.num_hidden_groups else ""
    factor = f", embeddings {m.embedding_size} wide" if m.embedding_size else ""
    print(f"{name}: {m.num_hidden_layers} layers, hidden {m.hidden_size}, {m.num_attention_heads} heads, "
          f"vocab {m.vocab_size}{factor}{sharing}; objective {config.objective}, "
          f"sequence length {config.data.max_seq_length}")
    rows = [("embeddings", parts["embeddings"]), ("encoder layers", parts["layers"]), ("pooler", parts["pooler"]),
            ("encoder total", parts["encoder_params"]), (f"MLM head ({'tied' if m.tie_word_embeddings else 'own decoder'}, + bias)", parts["mlm_head"]),
            ("pair head (NSP/SOP)", parts["pair_head"])]
    if config.objective == "mlm_sbo":
        rows[5] = ("span-boundary head (SBO)", parts["sbo_head"])
    if config.objective == "electra":
        rows[4] = ("generator MLM head", parts["mlm_head"])
        rows += [("RTD head", parts["rtd_head"]), ("generator (shares tables)", parts["generator"])]
    rows.append(("total", parts["total_params"]))
    for label, count in rows:
        print(f"  {label:<26}{count:>15,}  ({_human(count)})")
    print(f"  {'training FLOPs / token':<26}{flops:>15,.0f}  ({_human(flops)}FLOP)")
    print(f"  {'params + AdamW (float32)':<26}{memory['param_and_optimizer_bytes']:>15,}  "
          f"({memory['param_and_optimizer_bytes'] / 2**30:.2f} GiB)")
    print(f"  {'  per device, fsdp=' + str(per_device['fsdp']):<26}"
          f"{per_device['param_and_optimizer_bytes_per_device']:>15,}  "
          f"({per_device['param_and_optimizer_bytes_per_device'] / 2**30:.2f} GiB)")
    print(json.dumps({"config": name, **parts, "training_flops_per_token": flops, **memory, **per_device}))


if __name__ == "__main__":
    cli.run_app(main)
