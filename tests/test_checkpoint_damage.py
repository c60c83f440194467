"""A damaged newest checkpoint (an array file cut short, a missing commit marker) never
stops a resume: the run names the step in one line, keeps the damaged folder under
checkpoints_damaged/, resumes from the one before and ends as an uninterrupted run."""

import logging
import shutil
from pathlib import Path

import pytest

from kd_jax import train
from kd_jax.checkpoint import NoReadableCheckpointError
from kd_jax.metrics_log import read_metrics, without_timing


def _config(tiny_config):
    c = tiny_config("sft")
    c.train.checkpoint_every, c.train.keep_last, c.train.eval_every = 2, 3, 0
    return c


def _truncate_largest_array_file(step_dir: Path) -> None:
    files = [p for p in (step_dir / "params").rglob("d/*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])


@pytest.fixture(scope="module")
def finished(tiny_config, tmp_path_factory):
    """An uninterrupted 6-step run with checkpoints at steps 2, 4 and 6."""
    root = tmp_path_factory.mktemp("damage")
    final = train.run(_config(tiny_config), root / "full")
    assert sorted(int(p.name) for p in (root / "full" / "checkpoints").iterdir()) == [2, 4, 6]
    return root, final


def test_truncated_newest_checkpoint_resumes_from_the_one_before(finished, tiny_config, caplog):
    root, full_final = finished
    run = root / "truncated"
    shutil.copytree(root / "full", run)
    _truncate_largest_array_file(run / "checkpoints" / "6")
    with caplog.at_level(logging.WARNING, logger="kd_jax.checkpoint"):
        final = train.run(_config(tiny_config), run)
    lines = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(lines) == 1 and "step 6" in lines[0] and "\n" not in lines[0], lines
    assert (run / "checkpoints_damaged" / "6" / "params").is_dir(), "damaged one kept"
    assert (run / "checkpoints" / "6" / "commit_success.txt").exists(), "step 6 redone"
    assert without_timing(final) == without_timing(full_final)
    assert read_metrics(run, timing=False) == read_metrics(root / "full", timing=False)


def test_missing_commit_marker_and_nothing_readable(finished, tiny_config, caplog):
    root, _ = finished
    run = root / "uncommitted"
    shutil.copytree(root / "full", run)
    (run / "checkpoints" / "6" / "commit_success.txt").unlink()
    for step in ("2", "4"):
        _truncate_largest_array_file(run / "checkpoints" / step)
    with caplog.at_level(logging.WARNING, logger="kd_jax.checkpoint"):
        with pytest.raises(NoReadableCheckpointError, match="start afresh with a new --workdir"):
            train.run(_config(tiny_config), run)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "step 6 cannot be read (no commit_success.txt" in said
    assert sorted(p.name for p in (run / "checkpoints_damaged").iterdir()) == ["2", "4", "6"]
