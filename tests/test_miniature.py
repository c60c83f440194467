"""The miniature suite end to end at a few steps: every run, cache, synthetic set and report."""

import json

from kd_jax.miniature import conditions, findings, suite


def test_miniature_suite_runs_end_to_end_and_resumes(builtin_dir, tmp_path):
    scale = conditions.SCALES["test"]
    plan = conditions.build_plan(scale)
    root, docs = tmp_path / "mini", tmp_path / "docs"
    timings = suite.run_plan(plan, root, scale)

    for run in plan:  # every run trained to its last step and was evaluated
        assert (root / run.name / "checkpoints" / str(run.config.train.num_steps)).is_dir()
        assert (root / run.name / "eval" / "scores.json").exists(), run.name
    for run in plan:
        if run.teacher:
            assert (root / run.name / "eval" / "fidelity.json").exists(), run.name
    counts = json.loads((root / "synthetic.jsonl.counts.json").read_text())
    assert (root / "synthetic.jsonl").read_text().count("\n") > 0, counts
    assert json.loads((root / "cache-teacher" / "meta.json").read_text())["complete"]

    path = findings.write(root, scale, timings, docs=str(docs))
    text = path.read_text()
    for heading in ("## (a)", "## (b)", "## (c)", "## (d)", "## Figures", "## Cost"):
        assert heading in text, heading
    summary = json.loads((path.parent / "findings.json").read_text())
    assert sorted(summary) == ["a", "b", "c", "d"]
    doc = (docs / "miniature.md").read_text()
    pngs = sorted(p.name for p in docs.glob("miniature_*.png"))
    assert pngs and all(f"]({p})" in doc for p in pngs)

    # A second invocation finds every step done and trains nothing.
    stamps = {r.name: (root / r.name / "checkpoints").stat().st_mtime_ns for r in plan}
    suite.run_plan(plan, root, scale)
    assert stamps == {r.name: (root / r.name / "checkpoints").stat().st_mtime_ns for r in plan}
