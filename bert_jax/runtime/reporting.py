"""Where metrics go: a readable log line, JSON lines in the workdir, and TensorBoard event files.

Only process 0 writes. On resume, JSON lines and TensorBoard events past the restored step are dropped
(they belong to work that the restart repeats, perhaps cut off mid-write by a kill), so every step
appears once in both.
"""

from __future__ import annotations

import glob
import json
import logging as std_logging
import os
import struct

import jax
from absl import logging

# Libraries whose INFO records (one per checkpoint file, per array...) would bury the training log.
_CHATTY_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/grain/")


class _QuietLibraries(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(lib in record.pathname for lib in _CHATTY_LIBRARIES)


def quiet_library_logs() -> None:
    """Keeps warnings and errors of Orbax, TFDS and Grain but drops their INFO chatter (entrypoints call it)."""
    logging.get_absl_handler().addFilter(_QuietLibraries())


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class MetricsWriter:
    """Writes `metrics.jsonl` and TensorBoard events under the workdir (process 0 only)."""

    def __init__(self, workdir: str, *, resume_step: int = 0):
        self.active = jax.process_index() == 0
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self._tensorboard = None
        if not self.active:
            return
        os.makedirs(workdir, exist_ok=True)
        _truncate_after(self.jsonl_path, resume_step)
        tensorboard_dir = os.path.join(workdir, "tensorboard")
        earlier = glob.glob(os.path.join(tensorboard_dir, "events.out.tfevents.*"))
        for path in earlier:
            _truncate_events_after(path, resume_step)
        from tensorboardX import SummaryWriter  # imported lazily: only the writing process needs it
        # A new file per (re)start; the suffix keeps it apart from an earlier file named in the same second.
        self._tensorboard = SummaryWriter(tensorboard_dir, filename_suffix=f".{len(earlier)}")

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        """Appends one JSON line {"step", "split", **metrics} and the TensorBoard scalars `split/name`."""
        if not self.active:
            return
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        for name, value in metrics.items():
            self._tensorboard.add_scalar(f"{split}/{name}", value, step)
        self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _truncate_after(path: str, step: int) -> None:
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):
            logging.warning("dropping unreadable metrics line in %s: %r", path, line[:80])
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(kept)


def read_event_records(path: str) -> list[bytes]:
    """The serialized Event protos of a TensorBoard file, up to the first incomplete or corrupt record."""
    from tensorboardX.record_writer import masked_crc32c
    records = []
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset + 12 <= len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("Q", header)
        end = offset + 12 + length + 4
        if end > len(data) or struct.unpack("I", data[offset + 8:offset + 12])[0] != masked_crc32c(header):
            break
        record = data[offset + 12:end - 4]
        if struct.unpack("I", data[end - 4:end])[0] != masked_crc32c(record):
            break
        records.append(record)
        offset = end
    return records


def _truncate_events_after(path: str, step: int) -> None:
    """Rewrites an event file without the events of steps after `step` (and without a torn last record)."""
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c
    kept = []
    for record in read_event_records(path):
        event = event_pb2.Event.FromString(record)
        if event.step <= step or not event.HasField("summary"):
            kept.append(record)
    with open(path + ".tmp", "wb") as f:
        for record in kept:
            header = struct.pack("Q", len(record))
            f.write(header + struct.pack("I", masked_crc32c(header)) + record
                    + struct.pack("I", masked_crc32c(record)))
    os.replace(path + ".tmp", path)


def _pair_part(metrics: dict[str, float]) -> str:
    return "".join(f" | {task}_acc {metrics[f'{task}_accuracy']:.4f}" for task in ("nsp", "sop")
                   if f"{task}_accuracy" in metrics)


def train_log_line(step: int, num_steps: int, metrics: dict[str, float], seconds_left: float) -> str:
    return (f"step {step}/{num_steps} | loss {metrics['loss']:.4f} | mlm_acc {metrics['mlm_accuracy']:.4f}"
            f"{_pair_part(metrics)} | lr {metrics['learning_rate']:.3g} | grad_norm {metrics['grad_norm']:.3f} | "
            f"{_skipped_part(metrics)}{metrics['sequences_per_second']:.1f} seq/s | ETA {format_duration(seconds_left)}")


def _skipped_part(metrics: dict[str, float]) -> str:
    skipped = metrics.get("skipped_steps", 0)
    return f"skipped {skipped} non-finite step(s) | " if skipped else ""


def eval_log_line(step: int, metrics: dict[str, float]) -> str:
    return (f"eval @ step {step} | mlm_loss {metrics['mlm_loss']:.4f} | mlm_acc {metrics['mlm_accuracy']:.4f}"
            f"{_pair_part(metrics)} | examples {metrics['num_examples']}")
