"""Every config file parses, and every condition of every sweep builds and validates,
both on the real models and data and as its `runlocal` CPU variant (no training)."""

import glob
import importlib.util
import os

import pytest

from kd_jax import sweep
from kd_jax.cli.commands import parse_config
from kd_jax.config_checks import validate
from kd_jax.evaluation import resolve

CONFIG_DIR = os.path.join(os.path.dirname(__file__), os.pardir, "configs")
FILES = sorted(glob.glob(os.path.join(CONFIG_DIR, "*.py")))
TINY = {"tiny-teacher", "tiny-student", "tiny-student-xs", "tiny-student-l"}


def _exec(path):
    spec = importlib.util.spec_from_file_location(f"cfg_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STUDIES = [f for f in FILES if hasattr(_exec(f), "sweep")]


@pytest.fixture(autouse=True)
def roots(monkeypatch):
    monkeypatch.setenv("KD_JAX_MODELS", "/models")
    monkeypatch.setenv("KD_JAX_DATA", "/data")


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_every_config_file_parses(path):
    module = _exec(path)
    if hasattr(module, "get_config"):
        assert module.get_config().student is not None  # the file's default condition


def _built(module, runlocal):
    conds = sweep.ordered_conditions(module, runlocal=runlocal)
    return conds, [
        sweep.build_config(module, a, lambda d: f"/runs/{sweep.condition_name(d)}") for a in conds
    ]


@pytest.mark.parametrize("runlocal", [True, False], ids=["runlocal", "real"])
@pytest.mark.parametrize("path", STUDIES, ids=os.path.basename)
def test_every_condition_builds_and_validates(path, runlocal):
    module = sweep.load_module(path)
    conds, configs = _built(module, runlocal)
    names = [sweep.condition_name(a) for a in conds]
    assert len(set(names)) == len(names)
    for arg, c in zip(conds, configs, strict=True):
        validate(c, None)
        for dep in sweep.dependencies(module, arg).values():  # dependencies come first
            assert names.index(sweep.condition_name(dep)) < names.index(sweep.condition_name(arg))
        for mc in (c.student, c.teacher):
            if runlocal:
                assert not mc.hf_path and (not mc.preset or mc.preset in TINY), arg
            elif mc.hf_path:
                assert mc.hf_path.startswith("/models/"), arg
        paths = [c.data.train, c.data.validation, c.data.tokenizer]
        if runlocal:
            assert all(p.startswith("builtin:") for x in paths for p in x.split(",") if p), arg
        else:
            assert c.data.train.startswith("/data/") and c.data.tokenizer.startswith("/models/")
        assert c.train.num_steps >= 1
        if c.gkd.lambda_ > 0:
            assert c.method == "kd" and c.kd.beta == 0.5 and not c.data.packing, arg
        if not runlocal:  # real sizes: a remat policy chosen for the row length
            assert c.student.remat_policy != "none", arg
            if c.data.max_length >= 4096 and c.gkd.lambda_ == 0 and c.kd.reduction == "token":
                assert c.data.packing, arg  # long rows pack (segment ids in the kernel)
        if c.eval.tasks:
            resolve(list(c.eval.tasks))


def test_the_grids_hold_every_study_condition():
    def count(name, runlocal=False):
        return len(sweep.load_module(os.path.join(CONFIG_DIR, name)).sweep())

    # Study B: 8 models x 2 tasks fine-tuned; 11 pairs x 3 KD methods x 2 tasks.
    assert count("study_b_main.py") == 16 + 66
    # 5 ablation pairs x 2 methods x 2 tasks x 3 values, plus the 3 students' SFT x 2 tasks.
    assert count("study_b_temperature.py") == count("study_b_noise.py") == 60 + 6
    assert count("study_b_base_teacher.py") == 10 + 6
    # Study A: 3 Llama students x 5 sizes x (SFT + GKD from 2 teachers), and the
    # cross-architecture Qwen2.5-7B x 5 sizes x (SFT + GKD from Qwen2.5-72B-Instruct).
    assert count("study_a_data_size.py") == 45 + 10
    # 3 domains x (SFT, one-stage, and 4 synthetic sizes x (stage 1, two-stage, mixed)).
    assert count("study_a_low_resource.py") == 42


def test_gkd_and_study_b_recipes():
    a = sweep.load_module(os.path.join(CONFIG_DIR, "study_a_data_size.py"))
    c = a.get_config("student=llama3b,method=gkd,size=50k,teacher=instruct70b")
    assert c.method == "kd" and c.kd.divergence == "gjsd" and c.kd.beta == 0.5
    assert (c.gkd.lambda_, c.gkd.temperature, c.gkd.max_new_tokens) == (0.5, 0.9, 128)
    assert c.teacher.hf_path == "/models/Llama-3.3-70B-Instruct"
    assert c.data.num_examples == 50_000 and c.train.num_steps == 2 * 391  # 2 epochs
    b = sweep.load_module(os.path.join(CONFIG_DIR, "study_b_main.py"))
    c = b.get_config("pair=qwen14b-qwen0.5b,method=revkd,task=commonsense")
    assert (c.kd.divergence, c.kd.reduction, c.kd.vocab_size) == ("rkl_studyb", "sequence", 151936)
    assert c.student.lora.enabled and c.student.lora.rank == 8 and c.seed == 6
    assert c.data.train_on_inputs and c.data.alpaca_template == "kd_generalization"
    assert b.dependencies("pair=qwen14b-qwen0.5b,method=revkd,task=commonsense") == {
        "teacher.workdir": "model=qwen14b,method=sft,task=commonsense"
    }


def test_a_printed_command_parses_with_the_train_cli(tmp_path, capsys, monkeypatch):
    path = os.path.join(CONFIG_DIR, "study_a_low_resource.py")
    only = "arc_student-llama1b_recipe-two-stage_synthetic-1k"
    sweep.run_sweep(path, tmp_path, runlocal=True, only=only, print_commands=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3  # the teacher, stage 1, then stage 2
    argv = lines[-1].split()[2:]
    # ml_collections reads `--config.x=y` overrides from sys.argv, as `kd-jax` sets it.
    monkeypatch.setattr("sys.argv", lines[-1].split())
    config, workdir = parse_config(argv)
    assert config.student.workdir.endswith("domain-arc_student-llama1b_recipe-stage1_synthetic-1k")
    assert config.teacher.workdir.endswith("role-teacher_domain-cipher")
    assert workdir.endswith("recipe-two-stage_synthetic-1k")


@pytest.mark.parametrize("scale", ["smoke", "full"])
def test_miniature_plan_builds_valid_configs_in_dependency_order(scale, tmp_path):
    from kd_jax.miniature import conditions, suite

    runs = conditions.build_plan(conditions.SCALES[scale])
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    for i, run in enumerate(runs):
        validate(suite.resolve_paths(run, tmp_path), None)
        for need in run.needs:
            if need in names:
                assert names.index(need) < i, (run.name, need)
    seeds = {r.meta.get("seed") for r in runs if "c" in r.groups}
    assert seeds == set(conditions.SCALES[scale].seeds)


STUDY_A = sorted(glob.glob(os.path.join(CONFIG_DIR, "study_a_*.py")))
STUDY_A = [f for f in STUDY_A if hasattr(_exec(f), "sweep")]


@pytest.mark.parametrize("path", STUDY_A, ids=os.path.basename)
def test_study_a_runlocal_runs_its_evaluations(path, eval_model, tmp_path):
    """The runlocal variant's `eval.*` settings drive a real evaluation on built-in data."""
    import json

    from kd_jax.evaluation import chat_renderer, evaluate, make_generate, run_eval

    module = sweep.load_module(path)
    arg = next(a for a in sweep.ordered_conditions(module, runlocal=True) if "role=" not in a)
    c = module.get_config(arg)
    tasks = resolve(list(c.eval.tasks))
    if "study_a_low_resource" not in path:
        names = {t.name for t in tasks}
        assert {"ifeval", "gpqa_diamond"} <= names and len(names & set(run_eval_bbh())) == 27
        real = module.get_config(arg.replace(",runlocal", "").replace("runlocal", ""))
        assert tuple(real.eval.tasks) == ("ifeval", "bbh", "gpqa_diamond")
        assert real.eval.data_root == "/data/study_a_eval"
    model, tok = eval_model
    # A batch of 2 (not the config's 64) and 6 new tokens keep CPU compiles and decoding short.
    generate = make_generate(
        model, tok, max_new_tokens=6, temperature=c.eval.temperature, batch_size=2, seed=c.seed
    )
    doc = evaluate(
        tasks,
        generate,
        None,
        str(tmp_path),
        limit=1,
        progress=False,
        data_root=run_eval.data_roots(tasks, c.eval.data_root or None),
        render_chat=chat_renderer(tok),
        batch_size=2,
    )
    assert set(doc["tasks"]) == {t.name for t in tasks}
    if "ifeval" in doc["tasks"]:
        assert set(doc["tasks"]["ifeval"]) >= {"prompt_strict", "inst_loose"}
    given = [json.loads(x) for x in open(tmp_path / "responses.jsonl")]
    assert len(given) == len(tasks)  # one example per task


def run_eval_bbh():
    from kd_jax.evaluation import GROUPS

    return GROUPS["bbh"]


def test_study_a_cross_architecture_and_one_chat_template():
    a = sweep.load_module(os.path.join(CONFIG_DIR, "study_a_data_size.py"))
    c = a.get_config("student=qwen7b,method=gkd,size=10k,teacher=qwen72b")
    assert c.student.hf_path == "/models/Qwen2.5-7B" and c.student.preset == "qwen2.5-7b"
    assert c.teacher.hf_path == "/models/Qwen2.5-72B-Instruct"
    with pytest.raises(ValueError, match="do not share a tokenizer"):
        a.get_config("student=qwen7b,method=gkd,size=10k,teacher=sft70b")
    # SFT and GKD (either teacher) tokenize with the student's tokenizer and template.
    for arg in ("method=sft", "method=gkd,teacher=sft70b", "method=gkd,teacher=instruct70b"):
        c = a.get_config(f"student=llama3b,size=10k,{arg}")
        assert c.data.tokenizer == "/models/Llama-3.2-3B", arg
        assert c.kd.vocab_size == 0  # alignment, if any, is detected at setup
