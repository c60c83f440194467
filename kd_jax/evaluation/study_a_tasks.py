"""Registers Study A's general evaluations: IFEval, the 27 BBH tasks and GPQA diamond.

Names in `eval.tasks` / `kd-jax eval --tasks`: "ifeval"; "bbh_<task>" for each BBH task
and the group "bbh" (all 27); "gpqa_diamond" (also the group "gpqa"); the group
"study_a" is all of them. Files are read under the data root, per family:
  ifeval        input_data.jsonl
  bbh           bbh/<task>.json and cot-prompts/<task>.txt
  gpqa          gpqa_diamond.csv
so one root may hold all three, or `{family: folder}` maps each to its own folder.
The scorers live in ifeval.py, bbh.py and gpqa.py; this module only wires them in.
"""

from __future__ import annotations

import os

from kd_jax.evaluation import bbh, gpqa, ifeval
from kd_jax.evaluation.metrics import METRICS
from kd_jax.evaluation.tasks import PromptOptions, Task, builtin_chat_text, register


def _ifeval_prompt(record: dict, opts: PromptOptions) -> str:
    return (opts.render_chat or builtin_chat_text)(ifeval.prompt_messages(record))


def _ifeval_refine(prediction, response, record, rule) -> dict:
    del prediction, rule
    verdict = ifeval.verdicts(response, ifeval.gold(record))
    return {**verdict, "correct": all(verdict["follow_strict"])}


# Built-in tiny files in the three layouts (invented items), for `runlocal` and tests.
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "study_a")

METRICS.update(ifeval.METRICS)

register(
    Task(
        "ifeval",
        "ifeval",
        "input_data.jsonl",
        load=ifeval.load,
        prompt=_ifeval_prompt,
        response={"faithful": ifeval.response},
        extract={"faithful": lambda r: None},
        correct=lambda pred, gold: False,
        gold=lambda r: r["key"],
        metrics=tuple(ifeval.METRICS),
        ident=lambda r, i: str(r["key"]),
        refine=_ifeval_refine,
    ),
    groups=("study_a",),
)

for _name in bbh.TASKS:
    register(
        Task(
            f"bbh_{_name}",
            "bbh",
            f"bbh/{_name}.json",
            load=bbh.loader(_name),
            prompt=bbh.prompt,
            response={"faithful": bbh.response},
            extract={"faithful": bbh.extract},
            correct=bbh.correct,
            gold=lambda r: r["target"],
        ),
        groups=("study_a",),
    )

register(
    Task(
        "gpqa_diamond",
        "gpqa",
        "gpqa_diamond.csv",
        load=gpqa.load,
        prompt=gpqa.prompt,
        response={"faithful": gpqa.response},
        extract={"faithful": gpqa.flexible, "strict": gpqa.strict},
        correct=gpqa.correct,
        ident=lambda r, i: r["id"],
        refine=gpqa.refine,
    ),
    groups=("study_a",),
)
