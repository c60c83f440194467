"""Examples into fixed-length rows (packed or padded) and rows into batches, with stats.

A row of length T follows the batch contract:
  inputs int32 [T], targets int32 [T], loss_mask float32 [T],
  positions int32 [T] (from 0 for each example), segment_ids int32 [T] (1, 2, ... per
  example, 0 on padding), plus num_truncated int32 (how many of its examples were cut).
Padding is 0 in every field, so padded positions are never trained and, with segment
id 0, never attended to.

Packing is grain's first-fit packer over `num_bins` rows at a time: each example goes
into the first row with room, and when one fits nowhere all rows are emitted. Examples
are never split, so an example's targets stay its own next tokens. The packer's state
(parent state at the start of the current group of rows, plus rows already emitted)
makes resuming exact.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from kd_jax.data.token_alignment import ALIGN_KEYS

ROW_KEYS = ("inputs", "targets", "loss_mask", "positions", "segment_ids")
# Per-token [T, k] teacher signal from an offline cache (kd_jax.teacher_cache), if used.
TOPK_KEYS = ("teacher_topk_values", "teacher_topk_indices")
# Per-token [T, K] distinct ids and counts of K teacher draws (kd_jax.sampled_cache).
SAMPLE_KEYS = ("teacher_sample_ids", "teacher_sample_counts")
# Cross-tokenizer KD (kd_jax.data.cross_tokenize): the teacher's own tokens [T] and the
# alignment of the two tokenizations (kd_jax.data.token_alignment.ALIGN_KEYS).
# record_index [B, 1] names each row's source record (on-policy rows re-render it); [B, 1]
# rather than [B] so that the batch sharding (rank 2) lays it out like every other key.
TEACHER_ROW_KEYS = (
    "teacher_inputs",
    "teacher_targets",
    "teacher_positions",
    "teacher_segment_ids",
    "record_index",
)
EXTRA_KEYS = TOPK_KEYS + SAMPLE_KEYS + TEACHER_ROW_KEYS + ALIGN_KEYS


def batch_spec(batch_size: int, length: int, topk: int = 0) -> dict:
    """{key: (shape, dtype)} of the batches the pipeline yields: [B, T] rows, plus the
    cached teacher top-k [B, T, k] when `topk` > 0. The one statement of the layout."""
    spec = {k: ((batch_size, length), np.int32) for k in ROW_KEYS}
    spec["loss_mask"] = ((batch_size, length), np.float32)
    if topk:
        spec["teacher_topk_values"] = ((batch_size, length, topk), np.float32)
        spec["teacher_topk_indices"] = ((batch_size, length, topk), np.int32)
    return spec


def batch_keys(row_or_batch: dict) -> tuple[str, ...]:
    """The model-facing keys present: ROW_KEYS, plus a teacher cache's TOPK_ / SAMPLE_KEYS or
    cross-tokenizer KD's TEACHER_ROW_KEYS and ALIGN_KEYS."""
    return ROW_KEYS + tuple(k for k in EXTRA_KEYS if k in row_or_batch)


def pack(examples: grain.IterDataset, length: int, num_bins: int, seed: int) -> grain.IterDataset:
    """First-fit packing of variable-length examples into rows of `length` tokens."""
    packed = grain.experimental.FirstFitPackIterDataset(
        examples,
        length_struct={"inputs": length, "targets": length, "loss_mask": length},
        num_packing_bins=num_bins,
        seed=seed,
        shuffle_bins=True,
        # targets and loss_mask share the segmentation of inputs; computing theirs again
        # would only cost time. truncated is per example, so it comes back as a list.
        meta_features=("targets", "loss_mask", "truncated"),
    )
    return packed.map(_packed_to_row)


def _packed_to_row(p: dict) -> dict:
    return {
        "inputs": p["inputs"],
        "targets": p["targets"],
        "loss_mask": p["loss_mask"],
        "positions": p["inputs_positions"].astype(np.int32),
        "segment_ids": p["inputs_segment_ids"].astype(np.int32),
        "num_truncated": np.int32(np.sum(p["truncated"])),
    }


def pad_row(example: dict, length: int) -> dict:
    """One example per row, right-padded to `length`."""
    n = len(example["inputs"])
    row = {}
    for key in ("inputs", "targets", "loss_mask"):
        v = example[key]
        row[key] = np.zeros(length, v.dtype)
        row[key][:n] = v
    row["positions"] = np.zeros(length, np.int32)
    row["positions"][:n] = np.arange(n, dtype=np.int32)
    row["segment_ids"] = np.zeros(length, np.int32)
    row["segment_ids"][:n] = 1
    row["num_truncated"] = np.int32(example["truncated"])
    for key in TOPK_KEYS + SAMPLE_KEYS:
        if key in example:
            v = example[key]
            row[key] = np.zeros((length, *v.shape[1:]), v.dtype)
            row[key][:n] = v
    if "teacher_inputs" in example:
        n_t = len(example["teacher_inputs"])
        for key in ("teacher_inputs", "teacher_targets"):
            row[key] = np.zeros(length, np.int32)
            row[key][:n_t] = example[key]
        row["teacher_positions"] = np.zeros(length, np.int32)
        row["teacher_positions"][:n_t] = np.arange(n_t, dtype=np.int32)
        row["teacher_segment_ids"] = (np.arange(length) < n_t).astype(np.int32)
        for key in ALIGN_KEYS:  # already laid out at `length`
            row[key] = example[key]
    if "record_index" in example:
        row["record_index"] = np.full(1, example["record_index"], np.int32)
    return row


def empty_row(length: int) -> dict:
    """An all-padding row: fills the last validation batch without adding to any loss."""
    zeros = np.zeros(length, np.int32)
    return {
        "inputs": zeros,
        "targets": zeros,
        "loss_mask": np.zeros(length, np.float32),
        "positions": zeros,
        "segment_ids": zeros,
        "num_truncated": np.int32(0),
    }


def stack_rows(rows) -> dict:
    """Rows -> batch of [B, T] arrays (and num_truncated [B])."""
    return {k: np.stack([r[k] for r in rows]) for k in (*batch_keys(rows[0]), "num_truncated")}


@dataclasses.dataclass
class BatchStats:
    """Running counts over the batches a process has consumed (JSON-friendly)."""

    batches: int = 0
    rows: int = 0
    positions: int = 0  # rows * T
    tokens: int = 0  # non-padding positions
    supervised: int = 0  # positions with loss_mask 1
    examples: int = 0
    truncated: int = 0

    def update(self, batch: dict) -> None:
        seg_BxT = np.asarray(batch["segment_ids"])
        self.batches += 1
        self.rows += seg_BxT.shape[0]
        self.positions += seg_BxT.size
        self.tokens += int(np.count_nonzero(seg_BxT))
        self.supervised += int(np.count_nonzero(np.asarray(batch["loss_mask"])))
        self.examples += int(seg_BxT.max(axis=1).sum())
        self.truncated += int(np.sum(batch["num_truncated"]))

    def summary(self) -> dict:
        """Counts plus packing efficiency (non-padding share of positions) and ratios."""
        out = dataclasses.asdict(self)
        out["packing_efficiency"] = self.tokens / max(self.positions, 1)
        out["supervised_fraction"] = self.supervised / max(self.positions, 1)
        out["examples_per_row"] = self.examples / max(self.rows, 1)
        out["truncated_fraction"] = self.truncated / max(self.examples, 1)
        return out
