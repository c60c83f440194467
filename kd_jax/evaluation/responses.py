"""Scoring responses that were generated elsewhere (a vLLM server, another framework).

A responses file is JSONL, one record per example:
    {"task": "ifeval", "id": "1000", "response": "..."}
`id` is the example's id as the task defines it (IFEval's `key`, GPQA's `Record ID`,
otherwise the example's 0-based position in its test file); `key` is accepted in place
of `id`, as IFEval's own files name it. `response` is the model's raw continuation of the
task's prompt. A model run writes exactly this file (eval/responses.jsonl), so the two
paths give the same predictions files: `score_responses` runs `evaluate` with the
responses standing in for the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from kd_jax.evaluation.harness import evaluate
from kd_jax.evaluation.tasks import EvalError, resolve


def read_responses(path: str) -> dict[str, dict[str, str]]:
    """{task: {id: response}} from a responses JSONL file."""
    out: dict[str, dict[str, str]] = {}
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise EvalError(f"{path}: cannot read the responses file ({e.strerror})") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalError(f"{path}:{n}: not valid JSON ({e.msg}); fix the line") from None
            ident = rec.get("id", rec.get("key")) if isinstance(rec, dict) else None
            if ident is None or "task" not in rec or not isinstance(rec.get("response"), str):
                raise EvalError(
                    f'{path}:{n}: expected {{"task", "id", "response"}} with a string response'
                )
            mine = out.setdefault(str(rec["task"]), {})
            if str(ident) in mine:
                raise EvalError(f"{path}:{n}: a second response for {rec['task']} id {ident}")
            mine[str(ident)] = rec["response"]
    if not out:
        raise EvalError(f"{path}: no responses in the file")
    return out


def score_responses(
    path: str,
    out_dir: str,
    *,
    tasks: str | None = None,
    data_root: str | Mapping[str, str],
    mode: str = "faithful",
    template: str = "alpaca",
    render_chat: Callable[[list[dict]], str] | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> dict:
    """Scores the responses in `path` (tasks: those named, default every task in the file)."""
    responses = read_responses(path)
    task_list = resolve(tasks if tasks else list(responses))
    return evaluate(
        task_list,
        None,
        None,
        out_dir,
        data_root=data_root,
        mode=mode,
        template=template,
        render_chat=render_chat,
        limit=limit,
        progress=progress,
        responses=responses,
        run_info={"responses": str(path)},
    )
