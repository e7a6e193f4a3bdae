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
import os
import re

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import load_file

from bert_jax import config as config_lib
from bert_jax.data import corpus as corpus_lib
from bert_jax.data import tokenizer_factory
from bert_jax.hf import files as hf_files
from bert_jax.hf import names as hf_names
from bert_jax.model import pretraining_heads
from bert_jax.pretraining import evaluation, losses
from bert_jax.pretraining import steps as steps_lib
from bert_jax.runtime import atomic, parallel
from bert_jax.runtime import checkpoint as checkpoint_lib


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


class HeldOutScorer:
    """A run's held-out batches, fixed masks and compiled eval step, built once and applied to any params of
    the run's model shape (its own checkpoints, or an HF checkpoint converted to it)."""

    def __init__(self, workdir: str, mask_rate: float, max_predictions_per_seq: int, kind: str):
        self.checkpointer = checkpoint_lib.Checkpointer(workdir, create=False, async_save=False)
        self.steps = sorted(self.checkpointer.all_steps())
        _, meta = self.checkpointer.restore_meta(self.steps[-1])
        self.config = fixed_masking_config(meta["config"], mask_rate, max_predictions_per_seq, kind)
        tokenizer = tokenizer_factory.tokenizer_from_serialized(meta["tokenizer_kind"], meta["tokenizer_model"])
        self.mesh = parallel.make_mesh(self.config.mesh)
        self.setup, _ = steps_lib.make_pretraining_setup(self.config, self.mesh, tokenizer)
        _, sources = corpus_lib.prepare_default_or_given(self.config.data, workdir, tokenizer=tokenizer)  # its caches
        self.batches = evaluation.eval_batches(sources["eval"], self.config, self.mesh, tokenizer.special_ids)
        self.eval_step = steps_lib.make_eval_step(self.setup, self.mesh)
        self.masking = {"mask_rate": mask_rate, "max_predictions_per_seq": max_predictions_per_seq, "kind": kind}

    def score(self, params, *, zero_segment_ids: bool = False) -> dict:
        """mlm_accuracy, mlm_loss, mlm_predictions, num_examples, masking. `zero_segment_ids`: every token in
        segment 0, for a model trained without segments (the tokens and masks stay the same)."""
        batches = self.batches
        if zero_segment_ids:
            batches = [dict(batch, segment_ids=np.zeros_like(batch["segment_ids"])) for batch in batches]
        totals = summed_statistics(self.eval_step, params, batches, self.mesh, self.config.data.eval_seed)
        metrics = losses.summarize(totals)
        return {"mlm_accuracy": metrics["mlm_accuracy"], "mlm_loss": metrics["mlm_loss"],
                "mlm_predictions": int(totals["mlm_count"]), "num_examples": int(totals["num_examples"]),
                "masking": self.masking}

    def hf_params(self, hf_checkpoint: str):
        """An HF BertForMaskedLM checkpoint directory as params of this run's model: its encoder and MLM head
        converted by bert_jax.hf.names (the import_hf path); the pooler and NSP head it lacks are fresh and
        do not enter the MLM sums. Refused unless the encoder's shape is this run's."""
        hf_config = hf_files.read_hf_config(hf_checkpoint)
        imported = hf_names.from_hf_state_dict(load_file(os.path.join(hf_checkpoint, "model.safetensors")),
                                               hf_config)
        differing = {name: (value, self.config.model.get(name))
                     for name, value in imported.config_overrides["model"].items()
                     if value != self.config.model.get(name)}
        if differing:
            raise SystemExit(f"error: {hf_checkpoint} is not this run's model shape (HF, ours): {differing}.")
        fresh = nnx.to_pure_dict(nnx.state(pretraining_heads.build_model(self.config, seed=0), nnx.Param))
        params = nnx.state(nnx.eval_shape(lambda: pretraining_heads.build_model(self.config, seed=0)), nnx.Param)
        nnx.replace_by_pure_dict(params, hf_names.with_fresh_heads(imported.params, fresh))
        return jax.device_put(params, self.setup.state_sharding.params)

    def close(self):
        self.checkpointer.close()


def evaluate_all(workdir: str, mask_rate: float, max_predictions_per_seq: int, kind: str) -> list[dict]:
    """Scores every checkpoint in `workdir`, oldest first, with one compiled eval step."""
    scorer = HeldOutScorer(workdir, mask_rate, max_predictions_per_seq, kind)
    rows = []
    for step in scorer.steps:
        state = scorer.checkpointer.restore_state(step, scorer.setup.abstract_state)
        rows.append({"step": step, **scorer.score(state.params)})
    scorer.close()
    return rows


def evaluate_hf(hf_run: str, reference: str, mask_rate: float, max_predictions_per_seq: int, kind: str) -> list[dict]:
    """Scores every checkpoint-<step> directory of an HF Trainer output folder on the `reference` run's
    held-out rows and masks. mlm_accuracy with every segment id 0 (run_mlm.py's models never see segment
    1: an untrained embedding row); mlm_accuracy_with_segments with the rows' own segment ids."""
    checkpoints = sorted((int(name.split("-")[1]), os.path.join(hf_run, name)) for name in os.listdir(hf_run)
                         if re.fullmatch(r"checkpoint-\d+", name))
    if not checkpoints:
        raise SystemExit(f"error: {hf_run} has no checkpoint-<step> directories: the Trainer saved none.")
    scorer = HeldOutScorer(reference, mask_rate, max_predictions_per_seq, kind)
    rows = []
    for step, path in checkpoints:
        params = scorer.hf_params(path)
        row = {"step": step, **scorer.score(params, zero_segment_ids=True)}
        with_segments = scorer.score(params)
        row.update(mlm_accuracy_with_segments=with_segments["mlm_accuracy"],
                   mlm_loss_with_segments=with_segments["mlm_loss"])
        rows.append(row)
    scorer.close()
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="", help="a bert_jax pretraining run: score its checkpoints")
    parser.add_argument("--hf_run", default="", help="a Trainer output folder: score its checkpoint-<step> dirs")
    parser.add_argument("--reference", default="", help="with --hf_run: the bert_jax run whose held-out "
                        "rows, masks and model shape are used")
    parser.add_argument("--out", required=True)
    parser.add_argument("--mask_rate", type=float, default=0.15)
    parser.add_argument("--max_predictions_per_seq", type=int, default=20)
    parser.add_argument("--kind", default="token")
    args = parser.parse_args()
    if bool(args.workdir) == bool(args.hf_run) or bool(args.hf_run) != bool(args.reference):
        parser.error("give --workdir, or --hf_run with --reference")
    masking = (args.mask_rate, args.max_predictions_per_seq, args.kind)
    rows = (evaluate_hf(args.hf_run, args.reference, *masking) if args.hf_run
            else evaluate_all(args.workdir, *masking))
    atomic.write_text(args.out, "".join(json.dumps(row) + "\n" for row in rows))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
