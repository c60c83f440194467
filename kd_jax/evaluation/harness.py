"""`evaluate`: run tasks against a model interface and write predictions and scores.

The model is two plain callables, so tests use stubs and a run wraps its sampler:
  generate(prompts: list[str]) -> list[str]                 batched continuations
  loglikelihood(pairs: list[tuple[str, str]]) -> list[float]  sum log p(cont | ctx)
Either may be None; a task is scored by generation when `generate` is given and by
log-likelihood multiple choice when `loglikelihood` is given and the task has choices.

Output folder (`out_dir`):
  predictions/<task>.jsonl  one line per test example, in file order: index, id, prompt,
                            gold, and for generation generation, response, prediction,
                            correct (and a task's own verdict fields, e.g. IFEval's
                            follow_strict); for multiple choice mc_logliks, mc_choice, mc_gold,
                            mc_correct, mc_correct_norm
  scores.json               {"tasks": {task: {"n", "accuracy", ...}}, "average": {metric:
                            mean over tasks}, "extraction": {task: rule}, "config": {...}}
  scores.csv                task,metric,value,n (the same numbers, "average" rows last)
  responses.jsonl           with generation: {"task", "id", "response"} per example, the
                            raw generation; `responses=` scores such a file (from this or
                            any other system) with no model, giving the same predictions
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence

from tqdm.auto import tqdm

from kd_jax.data import templates
from kd_jax.evaluation import loglik as ll
from kd_jax.evaluation.metrics import METRICS
from kd_jax.evaluation.tasks import EvalError, PromptOptions, Task, resolve, task_file

Generate = Callable[[list[str]], list[str]]

SCORES_JSON, SCORES_CSV, PREDICTIONS_DIR = "scores.json", "scores.csv", "predictions"
RESPONSES_JSONL = "responses.jsonl"


def _load(task: Task, data_root, limit: int | None) -> list[dict]:
    records = task.load(task_file(task, data_root))
    if limit is not None:
        records = records[:limit]
    if not records:
        raise EvalError(f"task {task.name}: the test file has no records")
    return records


def _gold(task: Task, record: dict, i: int):
    try:
        return task.gold(record)
    except KeyError as e:
        raise EvalError(
            f"task {task.name}: record {i} has no {e} field; fix the test file"
        ) from None


def _score_generation(task, records, prompts, golds, generate, mode, batch_size, bar):
    rows = []
    rule = task.extraction(mode)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        gens = list(generate(chunk))
        if len(gens) != len(chunk):
            raise EvalError(f"generate returned {len(gens)} texts for {len(chunk)} prompts")
        for j, (prompt, gen) in enumerate(zip(chunk, gens, strict=True)):
            gold, record = golds[start + j], records[start + j]
            response, pred = task.answer(prompt, gen, mode)
            row = {"generation": gen, "response": response, "prediction": pred}
            if task.refine is not None:
                row.update(task.refine(pred, response, record, rule))
            if "correct" not in row:
                row["correct"] = bool(task.correct(row["prediction"], gold))
            rows.append(row)
        bar.update(len(chunk))
    return rows


def _score_multiple_choice(task, records, prompts, loglikelihood, style, batch_size, bar):
    rows = []
    for start in range(0, len(records), batch_size):
        stop = start + batch_size
        pairs_of = zip(records[start:stop], prompts[start:stop], strict=True)
        requests = [ll.mc_pairs(task, r, p, style) for r, p in pairs_of]
        flat = [pair for pairs, _, _ in requests for pair in pairs]
        scores = list(loglikelihood(flat))
        if len(scores) != len(flat):
            raise EvalError(f"loglikelihood returned {len(scores)} scores for {len(flat)} pairs")
        k = 0
        for pairs, conts, gold in requests:
            mine = scores[k : k + len(pairs)]
            k += len(pairs)
            choice, norm = ll.mc_choice(mine, conts, False), ll.mc_choice(mine, conts, True)
            rows.append(
                {
                    "mc_logliks": mine,
                    "mc_choice": choice,
                    "mc_gold": gold,
                    "mc_correct": choice == gold,
                    "mc_correct_norm": norm == gold,
                }
            )
        bar.update(len(requests))
    return rows


def replay(responses: Mapping[str, Mapping[str, str]], task: Task, ids: list[str]) -> Generate:
    """A `generate` that returns the given responses of `task`'s examples, in order."""
    given = responses.get(task.name, {})
    missing = [i for i in ids if i not in given]
    if missing:
        raise EvalError(
            f"the responses have no response for task {task.name}, id {missing[0]} "
            f"({len(missing)} missing); add them or use --limit"
        )
    queue = iter(ids)
    return lambda prompts: [given[next(queue)] for _ in prompts]


def evaluate(
    tasks: str | Sequence[str | Task],
    generate: Generate | None,
    loglikelihood: ll.LogLikelihood | None,
    out_dir: str,
    *,
    data_root: str | Mapping[str, str],
    mode: str = "faithful",
    template: str = "alpaca",
    render_chat: Callable[[list[dict]], str] | None = None,
    mc_style: str = "label",
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = True,
    run_info: dict | None = None,
    responses: Mapping[str, Mapping[str, str]] | None = None,
    write: bool = True,
) -> dict:
    """Scores `tasks` and writes predictions and scores to `out_dir`; returns scores.json's dict.

    data_root: the folder holding the tasks' files (for Study B, the LLM-Adapters checkout
    holding `dataset/`), or {family: folder} with an optional "default".
    mode: "faithful" (Study B's extraction) or "strict" (see extract.py).
    template: the Alpaca template of the prompt ("alpaca" or "kd_generalization").
    render_chat: messages -> prompt text for chat tasks (default: the built-in template).
    responses: {task: {id: response}} to score instead of calling a model (`generate`
    must then be None); see kd_jax.evaluation.responses.
    write: False on the hosts of a multi-host job other than the one writing (the scores
    are returned all the same).
    """
    if responses is not None and generate is not None:
        raise EvalError("pass either `generate` or `responses`, not both")
    if generate is None and loglikelihood is None and responses is None:
        raise EvalError("nothing to evaluate with: pass `generate`, `loglikelihood` or both")
    task_list = resolve(tasks)
    template_record = templates.template_info(template)  # also rejects an unknown name early
    opts = PromptOptions(template=template, render_chat=render_chat)
    loaded = {t.name: _load(t, data_root, limit) for t in task_list}
    for t in task_list:
        t.extraction(mode)  # fail on a bad mode before any model call
    generating = generate is not None or responses is not None
    passes = {
        t.name: generating + (loglikelihood is not None and t.choices is not None)
        for t in task_list
    }
    total = sum(len(loaded[name]) * k for name, k in passes.items())
    started = time.time()
    scores: dict[str, dict] = {}
    given: list[dict] = []
    predictions: dict[str, list[dict]] = {}
    with tqdm(total=total, desc="eval", unit="ex", disable=not progress) as bar:
        for task in task_list:
            bar.set_description(f"eval {task.name}")
            records = loaded[task.name]
            prompts = [task.prompt(r, opts) for r in records]
            golds = [_gold(task, r, i) for i, r in enumerate(records)]
            ids = [str(task.ident(r, i)) for i, r in enumerate(records)]
            rows = [
                {"index": i, "id": ids[i], "prompt": p, "gold": g}
                for i, (p, g) in enumerate(zip(prompts, golds, strict=True))
            ]
            entry: dict = {"n": len(records)}
            if generating:
                gen = generate if responses is None else replay(responses, task, ids)
                scored = _score_generation(
                    task, records, prompts, golds, gen, mode, batch_size, bar
                )
                given.extend(
                    {"task": task.name, "id": ids[i], "response": r["generation"]}
                    for i, r in enumerate(scored)
                )
                for row, extra in zip(rows, scored, strict=True):
                    row.update(extra)
                for metric in task.metrics:
                    entry[metric] = METRICS[metric](rows)
            if loglikelihood is not None and task.choices is not None:
                mc = _score_multiple_choice(
                    task, records, prompts, loglikelihood, mc_style, batch_size, bar
                )
                for row, extra in zip(rows, mc, strict=True):
                    row.update(extra)
                entry["mc_accuracy"] = sum(r["mc_correct"] for r in mc) / len(mc)
                entry["mc_accuracy_norm"] = sum(r["mc_correct_norm"] for r in mc) / len(mc)
            predictions[task.name] = rows
            scores[task.name] = entry

    metric_names = sorted({m for e in scores.values() for m in e if m != "n"})
    average = {
        m: sum(e[m] for e in scores.values() if m in e) / sum(m in e for e in scores.values())
        for m in metric_names
    }
    doc = {
        "tasks": scores,
        "average": average,
        "extraction": {t.name: t.extraction(mode) for t in task_list},
        "config": {
            "mode": mode,
            **template_record,  # name and hash: which prompt strings were used
            "mc_style": mc_style,
            "limit": limit,
            "generation": generating,
            "loglikelihood": loglikelihood is not None,
            "seconds": round(time.time() - started, 3),
        },
    }
    if run_info:
        doc["run"] = dict(run_info)
    if write:
        _write(out_dir, doc, predictions, given)
    return doc


def _write(out_dir: str, doc: dict, predictions: dict[str, list[dict]], given: list[dict]):
    """predictions/<task>.jsonl, responses.jsonl, scores.json and scores.csv."""
    os.makedirs(os.path.join(out_dir, PREDICTIONS_DIR), exist_ok=True)
    for name, rows in predictions.items():
        path = os.path.join(out_dir, PREDICTIONS_DIR, f"{name}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if given:
        with open(os.path.join(out_dir, RESPONSES_JSONL), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(g, ensure_ascii=False) + "\n" for g in given)
    scores, average, metric_names = doc["tasks"], doc["average"], list(doc["average"])
    with open(os.path.join(out_dir, SCORES_JSON), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(out_dir, SCORES_CSV), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["task", "metric", "value", "n"])
        for name, entry in scores.items():
            for m in metric_names:
                if m in entry:
                    w.writerow([name, m, f"{entry[m]:.6f}", entry["n"]])
        for m, v in average.items():
            w.writerow(["average", m, f"{v:.6f}", len(scores)])
