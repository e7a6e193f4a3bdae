"""Where metrics go: a readable log line, JSON lines in the workdir, and TensorBoard event files.

Only process 0 writes. On resume, JSON lines and TensorBoard events past the restored step are dropped
(they belong to work that the restart repeats, perhaps cut off mid-write by a kill), so every step
appears once in both. A damaged line or TensorBoard record (a torn append, a flipped byte) is dropped
alone, with a warning, and both files are rewritten in one piece (`atomic.py`): a kill during the rewrite
leaves the old file, never an empty one.
"""

from __future__ import annotations

import glob
import json
import logging as std_logging
import os
import struct

import jax
from absl import logging

from bert_jax.runtime import atomic

# Libraries whose INFO records (one per checkpoint file, per array...) would bury the training log.
_CHATTY_LIBRARIES = ("/orbax/", "/tensorflow_datasets/", "/grain/")


class _QuietLibraries(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        if "/orbax/" in record.pathname and record.exc_info:
            # Orbax logs a failed background save with its traceback from each of its threads (a full disk:
            # three); the error reaches the main thread too, which says it in one line or raises it there.
            record.exc_info, record.exc_text = None, None
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
        atomic.remove_leftovers(self.jsonl_path)
        _truncate_after(self.jsonl_path, resume_step)
        tensorboard_dir = os.path.join(workdir, "tensorboard")
        earlier = glob.glob(os.path.join(tensorboard_dir, "events.out.tfevents.*"))
        for path in earlier:
            atomic.remove_leftovers(path)
            _truncate_events_after(path, resume_step)
        from tensorboardX import (
            SummaryWriter,  # imported lazily: only the writing process needs it
        )
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
    """Drops the lines of steps after `step`, and damaged lines (a kill mid-append tears the last one)
    with a warning; the file is replaced in one piece, so a kill during the rewrite loses nothing."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line for line in f if line.strip()]
    steps = [_step_of(line, path) for line in lines]
    kept = [line.rstrip("\n") + "\n" for line, line_step in zip(lines, steps) if line_step is not None
            and line_step <= step]
    if kept != lines:
        atomic.write_text(path, "".join(kept))


def _step_of(line: str, path: str) -> int | None:
    """The step of a metrics line, or None (with a warning) when it is not a whole metrics row."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        logging.warning("dropping unreadable metrics line in %s: %r", path, line[:80])
        return None


def _frame(record: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    from tensorboardX.record_writer import masked_crc32c
    header = struct.pack("Q", len(record))
    return header + struct.pack("I", masked_crc32c(header)) + record + struct.pack("I", masked_crc32c(record))


def _record_at(data: bytes, offset: int) -> tuple[bytes | None, int | None]:
    """(record, end) of the TFRecord at `offset`; (None, end) when only its data is damaged (the length is
    trusted: its CRC matched); (None, None) when the header itself is damaged or cut off."""
    from tensorboardX.record_writer import masked_crc32c
    header = data[offset:offset + 8]
    if offset + 12 > len(data) or struct.unpack("I", data[offset + 8:offset + 12])[0] != masked_crc32c(header):
        return None, None
    end = offset + 12 + struct.unpack("Q", header)[0] + 4
    if end > len(data):
        return None, None
    record = data[offset + 12:end - 4]
    return (record if struct.unpack("I", data[end - 4:end])[0] == masked_crc32c(record) else None), end


def _next_record(data: bytes, offset: int) -> int:
    """The offset of the first whole, valid record after `offset` (len(data) if none): where framing
    resumes after a damaged header."""
    for candidate in range(offset + 1, len(data) - 11):
        record, _ = _record_at(data, candidate)
        if record is not None:
            return candidate
    return len(data)


def _scan_event_records(data: bytes) -> tuple[list[bytes], int]:
    """(the valid records of a TensorBoard file's bytes, how many bytes were skipped as damaged).

    A record whose data fails its CRC is skipped by its (CRC-checked) length; after a damaged or cut-off
    header the scan looks for the next record whose header and data CRCs both match, so one flipped byte
    costs one record, never the ones after it.
    """
    records, offset, dropped = [], 0, 0
    while offset < len(data):
        record, end = _record_at(data, offset)
        if record is not None:
            records.append(record)
        else:
            end = end or _next_record(data, offset)
            dropped += end - offset
        offset = end
    return records, dropped


def read_event_records(path: str) -> list[bytes]:
    """The serialized Event protos of a TensorBoard file, without damaged or cut-off records (a warning
    says how many bytes were dropped)."""
    with open(path, "rb") as f:
        records, dropped = _scan_event_records(f.read())
    if dropped:
        logging.warning("dropped %d damaged or cut-off bytes of TensorBoard records in %s; kept the %d "
                        "valid records", dropped, path, len(records))
    return records


def _truncate_events_after(path: str, step: int) -> None:
    """Rewrites an event file without the events of steps after `step` and without damaged records, in
    one piece (a kill during the rewrite leaves the old file)."""
    from tensorboardX.proto import event_pb2
    kept = []
    for record in read_event_records(path):
        event = event_pb2.Event.FromString(record)
        if event.step <= step or not event.HasField("summary"):
            kept.append(record)
    content = b"".join(_frame(record) for record in kept)
    if len(content) != os.path.getsize(path):  # equal only when no record was dropped or damaged
        atomic.write_bytes(path, content)


def _pair_part(metrics: dict[str, float]) -> str:
    """The pair task's accuracy (NSP/SOP), SpanBERT's span-boundary figures, ELECTRA's replaced-token
    detection figures, or the distillation terms (each term's mean, against the teacher)."""
    part = "".join(f" | {task}_acc {metrics[f'{task}_accuracy']:.4f}" for task in ("nsp", "sop")
                   if f"{task}_accuracy" in metrics)
    if "sbo_accuracy" in metrics:
        part += f" | sbo_loss {metrics['sbo_loss']:.4f} | sbo_acc {metrics['sbo_accuracy']:.4f}"
    if "rtd_accuracy" in metrics:
        part += (f" | rtd_loss {metrics['rtd_loss']:.4f} | rtd_acc {metrics['rtd_accuracy']:.4f}"
                 f" | replaced {metrics['replaced_fraction']:.3f}")
    part += "".join(f" | {name} {value:.4f}" for name, value in sorted(metrics.items()) if name.startswith("distill_"))
    return part


def train_log_line(step: int, num_steps: int, metrics: dict[str, float], seconds_left: float) -> str:
    return (f"step {step}/{num_steps} | loss {metrics['loss']:.4f} | mlm_acc {metrics['mlm_accuracy']:.4f}"
            f"{_pair_part(metrics)} | lr {metrics['learning_rate']:.3g} | grad_norm {metrics['grad_norm']:.3f} | "
            f"{_skipped_part(metrics)}{metrics['sequences_per_second']:.1f} seq/s | ETA {format_duration(seconds_left)}")


def _skipped_part(metrics: dict[str, float]) -> str:
    skipped = metrics.get("skipped_steps", 0)
    return f"skipped {skipped} non-finite step(s) | " if skipped else ""


def eval_log_line(step: int, metrics: dict[str, float]) -> str:
    return (f"eval @ step {step} | mlm_loss {metrics['mlm_loss']:.4f} | mlm_acc {metrics['mlm_accuracy']:.4f}"
            f"{_pair_part(metrics)}{_language_part(metrics)} | examples {metrics['num_examples']}")


def _language_part(metrics: dict[str, float]) -> str:
    """A multilingual run's held-out MLM accuracy per language, in id order."""
    accuracies = [(name.split("/", 1)[1], value) for name, value in metrics.items() if name.startswith("mlm_accuracy/")]
    return f" | mlm_acc by language {' '.join(f'{lang} {value:.4f}' for lang, value in accuracies)}" if accuracies else ""
