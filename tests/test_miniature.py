"""The miniature suite end to end at a few steps: every run, cache, synthetic set and report."""

import json

from kd_jax.miniature import conditions, findings, suite


def test_miniature_suite_runs_end_to_end_and_resumes(builtin_dir, tmp_path):
    scale = conditions.SCALES["test"]
    plan = conditions.build_plan(scale)
    root, docs = tmp_path / "mini", tmp_path / "docs"
    timings = suite.run_plan(plan, root, scale)

    passed, accs = suite.strong_gate(root)
    for run in plan:  # every run trained to its last step and was evaluated
        if "strong-teacher" in run.needs and not passed:  # the gate held (b) back
            assert not (root / run.name).exists(), run.name
            continue
        assert (root / run.name / "checkpoints" / str(run.config.train.num_steps)).is_dir()
        assert (root / run.name / "eval" / "scores.json").exists(), run.name
        if run.teacher:
            assert (root / run.name / "eval" / "fidelity.json").exists(), run.name
        if run.checkpoint == "best":  # validating runs kept and were scored at their best
            rows = [json.loads(x) for x in (root / run.name / "metrics.jsonl").open()]
            evals = {r["step"]: r["eval_ce"] for r in rows if "eval_ce" in r}
            kept = [int(p.name) for p in (root / run.name / "checkpoints_best").iterdir()]
            assert kept == [min(evals, key=evals.get)], (run.name, evals, kept)
            score = json.loads((root / run.name / "eval" / "scores.json").read_text())
            assert score["run"]["checkpoint"] == "best", run.name
    counts = json.loads((root / "synthetic.jsonl.counts.json").read_text())
    syn = (root / "synthetic-16.jsonl").read_text().splitlines()
    assert len(syn) == 16, counts
    human = (root / "cipher-human-train.jsonl").read_text().splitlines()
    val = (root / "cipher-human-val.jsonl").read_text().splitlines()
    assert (len(human), len(val)) == (scale.human, scale.human_val) and not set(human) & set(val)
    assert json.loads((root / "cache-teacher" / "meta.json").read_text())["complete"]

    path = findings.write(root, scale, timings, docs=str(docs))
    text = path.read_text()
    for heading in ("## Verdicts", "## (a)", "## (b)", "## (c)", "## (d)", "## Figures", "## Cost"):
        assert heading in text, heading
    assert ("**passed**" if passed else "**failed**") in text
    for prediction in conditions.PREDICTIONS.values():
        assert prediction in text
    summary = json.loads((path.parent / "findings.json").read_text())
    assert sorted(summary) == ["a", "b", "c", "d"]
    doc = (docs / "miniature.md").read_text()
    pngs = sorted(p.name for p in docs.glob("miniature_*.png"))
    assert "miniature_cipher_recipes.png" in pngs and all(f"]({p})" in doc for p in pngs)

    # A second invocation finds every step done and trains nothing.
    stamps = {r.name: (root / r.name).stat().st_mtime_ns for r in plan if (root / r.name).exists()}
    suite.run_plan(plan, root, scale)
    assert stamps == {r.name: (root / r.name).stat().st_mtime_ns for r in plan if r.name in stamps}


def test_strong_teacher_gate_needs_the_margin(tmp_path):
    def score(name, acc):
        (tmp_path / name / "eval").mkdir(parents=True, exist_ok=True)
        doc = {"tasks": {conditions.TASK: {"accuracy": acc}}}
        (tmp_path / name / "eval" / "scores.json").write_text(json.dumps(doc))

    score("teacher", 0.90)
    score("strong-teacher", 0.92)
    assert suite.strong_gate(tmp_path) == (False, {"teacher": 0.90, "strong-teacher": 0.92})
    score("strong-teacher", 0.935)
    assert suite.strong_gate(tmp_path)[0]


def test_sft_steps_follow_epochs_within_bounds():
    full = conditions.SCALES["full"]
    assert [full.steps(n) for n in full.sizes] == [250, 250, 375, 600, 600]
    plan = {r.name: r for r in conditions.build_plan(full)}
    sft = plan["tiny-student-l_n1000_sft_s0"]
    assert sft.checkpoint == "best" and sft.config.train.keep_best
    assert sft.config.train.eval_every == sft.config.train.num_steps // full.evals
    kd = plan["tiny-student-l_n1000_kd_teacher_T1_s0"]
    assert kd.config.train.num_steps == sft.config.train.num_steps and kd.checkpoint == "best"
    # the strong teacher is the teacher's base trained longer
    teacher, strong = plan["teacher"].config, plan["strong-teacher"].config
    assert strong.train.num_steps > teacher.train.num_steps
    assert strong.student.hf_path == teacher.student.hf_path
    # every model starts from a shipped base; stage two from stage one's best checkpoint
    assert all(r.config.student.hf_path or r.config.student.workdir for r in plan.values())
    two = plan["cipher_two-stage_syn500_s0"]
    assert (two.config.student.workdir, two.config.student.checkpoint) == (
        "cipher_stage1_syn500_s0",
        "best",
    )
