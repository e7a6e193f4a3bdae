"""Held-out MLM accuracy of every checkpoint of a pretraining run under ONE fixed masking, whatever the run
trained with.

    python benchmarks/time_to_quality/eval_checkpoints.py --workdir=RUN --out=FILE.jsonl \
        [--mask_rate=0.15 --max_predictions_per_seq=20 --kind=token]

Why not `bert_jax.evaluate`: the library's evaluation masks with the run's own `config.masking`, so a run
trained at 30% masking would be scored on 30%-masked rows, where MLM accuracy is lower (less context) and
not comparable with a 15% run. Here the run's stored config is loaded, only `config.masking` is replaced
(rate, cap, kind; 80/10/10 kept), and each checkpoint is scored on the run's own held-out split with the
library's eval pipeline and eval step: the same rows and, with the same tokenizer, the same masks for every
run (fixed by config.data.eval_seed). One line per checkpoint: {"step", "mlm_accuracy", "mlm_loss",
"mlm_predictions", "num_examples", "masking"}.
"""

import argparse
import json

import jax

from bert_jax import config as config_lib
from bert_jax.data import corpus as corpus_lib
from bert_jax.data import tokenizer_factory
from bert_jax.pretraining import evaluation, losses
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import checkpoint as checkpoint_lib
from bert_jax.runtime import parallel


def fixed_masking_config(stored_config: dict, mask_rate: float, max_predictions_per_seq: int, kind: str):
    """The run's config with only its masking replaced (validated as the library would)."""
    config = config_lib.from_stored(stored_config)
    config.masking.update({"mask_rate": mask_rate, "max_predictions_per_seq": max_predictions_per_seq,
                           "kind": kind})
    return config_lib.validate(config)


def summed_statistics(eval_step, params, batches, mesh, eval_seed: int) -> dict[str, float]:
    """evaluation.run_evaluation's pass (the same batches, keys and step), returning the raw sums so that the
    number of scored predictions (mlm_count) is known: it sets the accuracy's standard error."""
    base_key, sharding, totals = jax.random.key(eval_seed), parallel.batch_sharding(mesh), None
    for index, batch in enumerate(batches):
        sums = eval_step(params, parallel.to_global_batch(batch, sharding), jax.random.fold_in(base_key, index), None)
        totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
    return {name: float(value) for name, value in jax.device_get(totals).items()}


def evaluate_all(workdir: str, mask_rate: float, max_predictions_per_seq: int, kind: str) -> list[dict]:
    """Scores every checkpoint in `workdir`, oldest first, with one compiled eval step."""
    checkpointer = checkpoint_lib.Checkpointer(workdir, create=False, async_save=False)
    steps = sorted(checkpointer.all_steps())
    _, meta = checkpointer.restore_meta(steps[-1])
    config = fixed_masking_config(meta["config"], mask_rate, max_predictions_per_seq, kind)
    tokenizer = tokenizer_factory.tokenizer_from_serialized(meta["tokenizer_kind"], meta["tokenizer_model"])
    mesh = parallel.make_mesh(config.mesh)
    setup, _ = steps_lib.make_pretraining_setup(config, mesh, tokenizer)
    _, sources = corpus_lib.prepare_default_or_given(config.data, workdir, tokenizer=tokenizer)  # the run's caches
    batches = evaluation.eval_batches(sources["eval"], config, mesh, tokenizer.special_ids)
    eval_step = steps_lib.make_eval_step(setup, mesh)
    masking = {"mask_rate": mask_rate, "max_predictions_per_seq": max_predictions_per_seq, "kind": kind}
    rows = []
    for step in steps:
        state = checkpointer.restore_state(step, setup.abstract_state)
        totals = summed_statistics(eval_step, state.params, batches, mesh, config.data.eval_seed)
        metrics = losses.summarize(totals)
        rows.append({"step": step, "mlm_accuracy": metrics["mlm_accuracy"], "mlm_loss": metrics["mlm_loss"],
                     "mlm_predictions": int(totals["mlm_count"]), "num_examples": int(totals["num_examples"]),
                     "masking": masking})
    checkpointer.close()
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mask_rate", type=float, default=0.15)
    parser.add_argument("--max_predictions_per_seq", type=int, default=20)
    parser.add_argument("--kind", default="token")
    args = parser.parse_args()
    rows = evaluate_all(args.workdir, args.mask_rate, args.max_predictions_per_seq, args.kind)
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
