"""Orbax checkpoints of a run: train state + data-iterator position, last N and best.

Layout under WORKDIR:
    checkpoints/<step>/      the last `train.keep_last` checkpoints (state + data + meta)
    checkpoints_best/<step>/ the one with the lowest eval loss (if `train.keep_best`)

The data item holds one JSON file per process (`data/process_<i>-of-<n>.json`): packed
hosts consume different numbers of examples per batch, so every host resumes from its
own position. Orbax writes each checkpoint into a temporary folder and renames it when
complete, so a run killed mid-save keeps every checkpoint it had finished.

Restore order (`kd_jax.train.run`): resume WORKDIR's newest readable checkpoint if there
is one, else initialize from `student.workdir` / `student.hf_path` (`init_from`), else
fresh. A checkpoint that cannot be read (an array file cut short, no commit marker) is
moved to `checkpoints_damaged/<step>/` for inspection and the next older one is tried
(`Checkpointer.restore_readable`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from kd_jax.errors import MissingFileError

log = logging.getLogger(__name__)

COMMIT_MARKER = "commit_success.txt"
DAMAGED_DIR = "checkpoints_damaged"


class NoReadableCheckpointError(FileNotFoundError, ValueError):
    """Every checkpoint of a run is damaged: the resume cannot continue."""


class DataStateHandler(ocp.CheckpointHandler):
    """This process's data-iterator position (a JSON-able dict) in a file of its own."""

    @staticmethod
    def _file(directory) -> Path:
        return Path(directory) / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory, args: DataStateSave) -> None:
        self._file(directory).write_text(json.dumps(args.state, indent=1))

    def restore(self, directory, args: DataStateRestore | None = None) -> dict:
        path = self._file(directory)
        if not path.exists():
            saved = sorted(p.name for p in Path(directory).glob("process_*.json"))
            raise MissingFileError(
                f"{path} is missing (saved: {', '.join(saved) or 'none'}); the checkpoint was "
                "written by another number of processes: resume with that many, or start the "
                "data from scratch in a new workdir with init_from."
            )
        return json.loads(path.read_text())

    def metadata(self, directory) -> None:
        return None

    def finalize(self, directory) -> None:
        pass

    def close(self) -> None:
        pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
    state: dict


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
    pass


def _group(state: dict) -> dict:
    """Orbax saves trees, not bare scalars: scalars (step, counters) go in one item."""
    items = {k: v for k, v in state.items() if isinstance(v, dict | list | tuple)}
    scalars = {k: v for k, v in state.items() if k not in items}
    if scalars:
        items["counters"] = scalars
    return items


def _ungroup(items: dict) -> dict:
    items = dict(items)
    counters = items.pop("counters", {})
    return {**items, **counters}


class Checkpointer:
    """Saves and restores `{state, data, meta}` items with Orbax CheckpointManagers."""

    def __init__(
        self,
        workdir: str | Path,
        *,
        keep_last: int = 2,
        keep_best: bool = True,
        async_save: bool = True,
    ):
        root = Path(workdir).absolute()
        self.root = root
        opts = dict(create=True, enable_async_checkpointing=async_save)

        def named(prefix):
            # Two managers finalize concurrently; on several processes their barriers
            # must have different names, or one barrier is "already ongoing".
            return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=prefix)

        self.last = ocp.CheckpointManager(
            root / "checkpoints",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max(keep_last, 1), multiprocessing_options=named("last"), **opts
            ),
        )
        self.best = None
        if keep_best:
            self.best = ocp.CheckpointManager(
                root / "checkpoints_best",
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1,
                    best_fn=lambda metrics: metrics["eval_loss"],
                    best_mode="min",
                    keep_checkpoints_without_metrics=False,
                    multiprocessing_options=named("best"),
                    **opts,
                ),
            )

    @staticmethod
    def _save_args(state: dict, data_state: dict, meta: dict):
        items = {k: ocp.args.StandardSave(v) for k, v in _group(state).items()}
        return ocp.args.Composite(
            **items, data=DataStateSave(data_state), meta=ocp.args.JsonSave(meta)
        )

    def save(self, step: int, state: dict, data_state: dict, meta: dict, force=False) -> None:
        """Saves every entry of the `state` dict as its own item (params, opt_state, ...)."""
        self.last.save(step, args=self._save_args(state, data_state, meta), force=force)

    def save_best(self, step: int, state, data_state: dict, meta: dict, eval_loss: float) -> None:
        """Offers this state as the best; Orbax keeps it only if its eval loss is lowest."""
        if self.best is None:
            return
        self.best.save(
            step,
            args=self._save_args(state, data_state, meta),
            metrics={"eval_loss": float(eval_loss)},
        )

    def latest_step(self) -> int | None:
        return self.last.latest_step()

    def restore(
        self,
        abstract_state: dict,
        step: int | None = None,
        which: str = "latest",
        with_data: bool = True,
    ):
        """(state, data_state, meta) of `step` (default: the latest, or the best).

        Only the items named in `abstract_state` are read: `{"params": ...}` alone skips
        the optimizer state; `with_data=False` skips the data position (data_state None).
        """
        manager = self.best if which == "best" else self.last
        if manager is None:
            raise MissingFileError("This run keeps no best checkpoint (train.keep_best=False).")
        if step is None:
            step = manager.best_step() if which == "best" else manager.latest_step()
        if step is None:
            raise MissingFileError(f"No {which} checkpoint in {manager.directory}.")
        grouped = _group(abstract_state)
        items = {k: ocp.args.StandardRestore(v) for k, v in grouped.items()}
        if with_data:
            items["data"] = DataStateRestore()
        out = manager.restore(step, args=ocp.args.Composite(**items, meta=ocp.args.JsonRestore()))
        data = out["data"] if with_data else None
        return _ungroup({k: out[k] for k in grouped}), data, out["meta"]

    def restore_readable(self, abstract_state: dict):
        """(step, state, data_state, meta) of the newest checkpoint that reads, or None if
        there is none. Each unreadable one is named in one line and set aside (kept on disk
        under `checkpoints_damaged/`, so the step it held can be written again)."""
        for step in sorted(self.last.all_steps(), reverse=True):
            problem, restored = None, None
            if not (Path(self.last.directory) / str(step) / COMMIT_MARKER).exists():
                problem = f"no {COMMIT_MARKER}: the save never finished"
            else:
                try:
                    restored = self.restore(abstract_state, step)
                except Exception as e:  # noqa: BLE001 - any read failure means "damaged"
                    problem = _first_line(e)
            # Every process must take the same branch, or the next collective hangs.
            problem = _agreed(problem)
            if problem is None:
                return (step, *restored)
            moved = self._set_aside(step)
            log.warning(
                "Checkpoint step %d cannot be read (%s); kept at %s, resuming from the one before.",
                step,
                problem,
                moved,
            )
        remaining = sorted(self.last.all_steps())
        if remaining or (self.root / DAMAGED_DIR).is_dir():
            raise NoReadableCheckpointError(
                f"No checkpoint in {self.last.directory} can be read (the damaged ones are "
                f"in {self.root / DAMAGED_DIR}); start afresh with a new --workdir (or "
                "continue from a good copy via --config.student.workdir)."
            )
        return None

    def _set_aside(self, step: int) -> Path:
        dest = self.root / DAMAGED_DIR / str(step)
        if jax.process_index() == 0:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():  # damaged twice at the same step: keep the newer copy
                dest = dest.with_name(f"{step}.{len(list(dest.parent.glob(f'{step}*')))}")
            (Path(self.last.directory) / str(step)).rename(dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"kd_jax_set_aside_{step}")
        self.last.reload()
        return dest

    def wait(self) -> None:
        self.last.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.last.close()
        if self.best is not None:
            self.best.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def _agreed(problem: str | None) -> str | None:
    """A local read failure counts as a failure on every process."""
    if jax.process_count() == 1:
        return problem
    from jax.experimental import multihost_utils

    bad = multihost_utils.process_allgather(np.int32(problem is not None))
    if problem is None and np.any(bad):
        return "unreadable on another process"
    return problem


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a concrete pytree, as a restore target."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def restore_params(workdir: str | Path, abstract_params, which: str = "latest"):
    """The `params` item of another run's checkpoint (for `init_from` and teachers)."""
    root = Path(workdir)
    if not (root / "checkpoints").is_dir():
        raise MissingFileError(
            f"{root} holds no kd_jax checkpoints; train it first or point to an HF folder."
        )
    ckpt = Checkpointer(root, keep_best=which == "best", async_save=False)
    try:
        state, _, meta = ckpt.restore({"params": abstract_params}, which=which, with_data=False)
    finally:
        ckpt.close()
    return state["params"], meta
