"""`kd-jax eval`: evaluate a trained run's student and describe the run for the report.

    kd-jax eval --workdir DIR [--checkpoint latest|best] [--tasks TASKS] [--data-root PATH]
        [--mode faithful|strict] [--temperature T] [--max-new-tokens N] [--limit N]
        [--teacher auto|TEACHER_WORKDIR|HF_DIR] [--meta KEY=VALUE ...] [--out DIR]
    kd-jax eval --responses FILE.jsonl [--tasks TASKS] --data-root PATH --out DIR
        scores responses generated elsewhere, with no model (kd_jax.evaluation.responses);
        a model run writes its own as DIR/eval/responses.jsonl in the same format

Writes, with the layout kd_jax.report reads (kd_jax/report/runs.py):
  DIR/eval/scores.json, scores.csv, predictions/<task>.jsonl   (kd_jax.evaluation.evaluate)
  DIR/run.json       method, student, teacher, student_size, data_size, temperature, seed
  with --teacher:
  DIR/eval/teacher/...   the teacher's own generations on the same prompts and settings
  DIR/eval/fidelity.json per-task agreement and rationale BLEU, and KL(teacher || student)
                         at T = 1 and top-1 agreement on the run's validation data

Settings the flags leave out come from the run's config.json (`eval.*`, `seed`), so a
config file fixes how its condition is evaluated. Built-in tasks read the built-in data;
Study B's tasks read `dataset/<name>/test.json` under --data-root (an LLM-Adapters checkout).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ml_collections import ConfigDict

from kd_jax.evaluation.tasks import EvalError, resolve

log = logging.getLogger("kd_jax.eval")
BUILTIN_FAMILIES = ("builtin", "builtin_alpaca")


# ---- describing a run --------------------------------------------------------------------


def model_name(mc: ConfigDict, _seen: tuple = ()) -> str:
    """A model's display name: the HF folder's name, the preset, or (for a model that
    continues another run) that run's student's name."""
    if mc.hf_path:
        return os.path.basename(os.path.normpath(mc.hf_path))
    if mc.workdir:
        path = Path(mc.workdir).absolute()
        cfg_path = path / "config.json"
        if path not in _seen and cfg_path.exists():
            run = ConfigDict(json.loads(cfg_path.read_text()))
            return model_name(run.student, (*_seen, path))
        return path.name
    return mc.preset or "unknown"


def method_name(config: ConfigDict) -> str:
    """SFT, SeqKD (forward KL), RevKD (reverse KL), GKD (on-policy, generalized JSD),
    otherwise KD-<divergence>; on-policy runs with another divergence are GKD-<divergence>.
    Teacher-noise runs get a suffix so they do not pool with noiseless ones."""
    if config.method == "sft":
        return "SFT"
    div = config.kd.divergence
    onpolicy = config.gkd.lambda_ > 0
    if onpolicy:
        name = "GKD" if div == "gjsd" else f"GKD-{div}"
    elif div in ("fkl", "fkl_studyb"):
        name = "SeqKD"
    elif div in ("rkl", "rkl_studyb"):
        name = "RevKD"
    else:
        name = f"KD-{div}"
    if config.kd.teacher_noise_std:
        name += f"+noise{config.kd.teacher_noise_std:g}"
    return name


def count_params(model) -> int:
    """Base-model parameters (LoRA adapters excluded): the size the report plots."""
    import jax
    from flax import nnx

    state = nnx.state(model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))
    return int(sum(x.size for x in jax.tree.leaves(state)))


def run_meta(config: ConfigDict, workdir: str | Path, student_size: int | None = None) -> dict:
    """run.json fields of a run from its resolved config (and data_info.json)."""
    meta = {
        "method": method_name(config),
        "student": model_name(config.student),
        "seed": int(config.seed),
    }
    if config.method == "kd":
        meta["teacher"] = model_name(config.teacher)
        meta["temperature"] = float(config.kd.temperature)
    if student_size:
        meta["student_size"] = student_size
    info = Path(workdir) / "data_info.json"
    if config.data.num_examples:
        meta["data_size"] = int(config.data.num_examples)
    elif info.exists():
        meta["data_size"] = int(json.loads(info.read_text())["train_examples"])
    return meta


# ---- evaluating --------------------------------------------------------------------------


def data_roots(tasks, data_root: str | None) -> dict:
    """{family: folder}: built-in tasks read the built-in data, the rest `data_root`."""
    from kd_jax.data import builtin_paths

    roots = {}
    if any(t.family in BUILTIN_FAMILIES for t in tasks):
        base = str(builtin_paths.ensure() / "data")
        roots.update({f: base for f in BUILTIN_FAMILIES})
    if data_root:
        roots["default"] = data_root
    elif any(t.family not in BUILTIN_FAMILIES for t in tasks):
        names = ", ".join(t.name for t in tasks if t.family not in BUILTIN_FAMILIES)
        raise EvalError(
            f"tasks {names} read test files; pass --data-root (the folder with dataset/)"
        )
    return roots


def _generator(model, tok_dir: str, settings: dict, rules=None):
    from kd_jax.data import load_tokenizer
    from kd_jax.evaluation.generation import make_generate
    from kd_jax.evaluation.tasks import chat_renderer

    tokenizer = load_tokenizer(tok_dir)
    render = chat_renderer(tokenizer) if getattr(tokenizer, "chat_template", None) else None
    return make_generate(model, tokenizer, rules=rules, **settings), render


def evaluate_run(
    workdir: str | Path,
    *,
    checkpoint: str = "latest",
    tasks: str | None = None,
    data_root: str | None = None,
    mode: str = "faithful",
    temperature: float | None = None,
    max_new_tokens: int | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    teacher: str | None = None,
    kl_batches: int = 0,
    meta: dict | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    mesh: dict | None = None,
) -> dict:
    """Evaluates the run in `workdir` (see the module docstring); returns scores.json's dict.
    `mesh` ({axis: size}) loads the models on that mesh instead of the run's own."""
    from kd_jax import sharding as shd
    from kd_jax.evaluation.fidelity import fidelity_from_predictions, write_fidelity
    from kd_jax.evaluation.harness import evaluate
    from kd_jax.models.loader import is_run, load_trained, read_run_config, run_rules
    from kd_jax.report import write_run_meta

    workdir = Path(workdir)
    if not is_run(workdir):
        raise EvalError(f"{workdir} is not a trained kd_jax run (no config.json or checkpoints/)")
    config = read_run_config(workdir)
    ev = config.eval
    task_list = resolve(tasks if tasks is not None else list(ev.tasks))
    if not task_list:
        raise EvalError("no tasks to evaluate; pass --tasks (e.g. --tasks builtin)")
    roots = data_roots(task_list, data_root or ev.get("data_root") or None)
    limit = ev.num_examples if limit is None else limit
    settings = dict(
        max_new_tokens=max_new_tokens or ev.max_new_tokens,
        temperature=ev.temperature if temperature is None else temperature,
        batch_size=batch_size or ev.batch_size,
        seed=config.seed if seed is None else seed,
    )
    out = Path(out) if out else workdir / "eval"
    on = shd.make_mesh(mesh) if mesh else None
    model, tok_dir = load_trained(workdir, which=checkpoint, mesh=on)
    generate, render = _generator(model, tok_dir, settings, rules=run_rules(workdir))
    common = dict(
        data_root=roots,
        mode=mode,
        template=config.data.alpaca_template,
        batch_size=settings["batch_size"],
        limit=limit or None,
        progress=progress,
        write=shd.is_writer(),  # on a multi-host mesh every host scores, process 0 writes
    )
    run_info = {"workdir": str(workdir), "checkpoint": checkpoint, **settings}
    doc = evaluate(
        task_list, generate, None, str(out), render_chat=render, run_info=run_info, **common
    )

    fields = run_meta(config, workdir, count_params(model))
    fields.update(meta or {})
    if shd.is_writer():
        write_run_meta(str(workdir), **fields)

    if teacher:
        teacher_path = _teacher_path(config, teacher)
        t_model, t_tok = load_trained(teacher_path, mesh=on)
        t_generate, t_render = _generator(t_model, t_tok, settings, rules=run_rules(teacher_path))
        evaluate(
            task_list,
            t_generate,
            None,
            str(out / "teacher"),
            render_chat=t_render,
            run_info={"teacher": teacher_path, **settings},
            **common,
        )
        held_out = held_out_fidelity(config, model, t_model, kl_batches)
        if shd.is_writer():
            per_task = fidelity_from_predictions(str(out), str(out / "teacher"))
            write_fidelity(str(out), per_task, **held_out)
    doc["out"] = str(out)
    return doc


def _teacher_path(config: ConfigDict, teacher: str) -> str:
    if teacher != "auto":
        return teacher
    t = config.teacher
    if config.method != "kd" or not (t.workdir or t.hf_path):
        raise EvalError("--teacher auto needs a KD run whose teacher is a workdir or HF folder")
    return t.workdir or t.hf_path


def _hidden_fn(model):
    """A jitted (final hidden states, unembedding) of an NNX decoder, weights as argument."""
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, tokens, positions, segment_ids):
        m = nnx.merge(graphdef, state)
        return m.hidden(tokens, positions, segment_ids), m.unembedding()

    return lambda *args: forward(state, *args)


def held_out_fidelity(
    config: ConfigDict, student, teacher, max_batches: int = 0, chunk_size: int = 256
) -> dict:
    """KL(teacher || student) at T = 1 and top-1 agreement, pooled over the supervised
    tokens of the run's validation data (data.validation, or the held-out split), chunked
    over tokens (kd_jax.losses.agreement): never both models' [B, T, V] logits at once."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from kd_jax import sharding as shd
    from kd_jax.data import DataConfig, builtin_paths, make_pipeline
    from kd_jax.losses.agreement import fidelity_sums
    from kd_jax.step_builder import rules_of

    data = config.data.to_dict()
    for key in ("train", "validation", "tokenizer"):
        data[key] = builtin_paths.resolve(data[key])
    data["prefetch_batches"] = 0
    # Every host feeds its rows of each batch when the models span hosts.
    mesh = shd.mesh_of(nnx.state(student))
    rows = None
    if mesh is not None and jax.process_count() > 1:
        rows = shd.batch_sharding(mesh, rules_of(config))
    batches = make_pipeline(DataConfig.from_mapping(data), sharding=rows).validation_batches()
    if not batches:
        log.warning("The run has no validation data (data.validation / validation_size): no KL.")
        return {}
    s_fn, t_fn = _hidden_fn(student), _hidden_fn(teacher)
    totals = {"kl": 0.0, "top1": 0.0, "tokens": 0.0}
    for i, b in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        args = [jnp.asarray(b[k]) for k in ("inputs", "positions", "segment_ids")]
        mask = jnp.asarray(b["loss_mask"])
        sums = fidelity_sums(*t_fn(*args), *s_fn(*args), mask, chunk_size=chunk_size)
        totals = {k: totals[k] + float(sums[k]) for k in totals}
    n = max(totals["tokens"], 1.0)
    return {"kl": totals["kl"] / n, "top1": totals["top1"] / n, "tokens": totals["tokens"]}
