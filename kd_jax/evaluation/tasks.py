"""The task registry: what each evaluation task reads, asks, extracts and scores.

A task is one declarative `Task` entry. Study B's 14 zero-shot tasks read the
LLM-Adapters test files (`dataset/<dir>/test.json`, a JSON list of records with
`instruction`, `input`, `output`, `answer`) and ask with the Alpaca evaluation prompt,
which ends right after "### Response:". The built-in CPU tasks read the chat JSONL
written by `kd_jax.data.synthetic_tasks` (`chat/<family>/test.jsonl`: `messages`, `task`,
`answer`). Study A's IFEval, BBH and GPQA are registered by study_a_tasks.py. Adding a
task is a few lines (extractors and rules live in extract.py), e.g. a yes/no task scored
by its last Yes/No:

    register(Task(
        name="my_yes_no", family="mine", path="mine/test.json",
        extract={"faithful": last_regex(r"Yes|No")}, correct=text_correct))

and a translation task scored by exact match, chrF and ROUGE-L (test_eval_tasks.py
registers one like it):

    register(Task(name="flores_en_xx", family="translation", path="flores/en_xx.jsonl",
                  load=load_jsonl, extract={"faithful": last_regex(r"Translation: (.*)", 1)},
                  correct=text_correct, metrics=("accuracy", "chrf", "rouge_l")))
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from kd_jax.data import builtin_tokenizer, synthetic_tasks, templates
from kd_jax.errors import UserError
from kd_jax.evaluation import extract as ex


class EvalError(UserError):
    """A problem the user can fix (unknown task, missing file, bad record), in one line."""


@dataclasses.dataclass(frozen=True)
class PromptOptions:
    """How prompts are rendered: the Alpaca template name and a chat renderer."""

    template: str = "alpaca"  # or "kd_generalization": Study B's strings byte for byte
    render_chat: Callable[[list[dict]], str] | None = None  # default: the built-in template


# ---- loaders and prompts -----------------------------------------------------------------


def load_json_list(path: str) -> list[dict]:
    """An LLM-Adapters test file: one JSON list of records."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise EvalError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise EvalError(f"{path}: expected a JSON list of records (LLM-Adapters test.json)")
    return data


def load_jsonl(path: str) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise EvalError(f"{path}:{n}: not valid JSON ({e.msg}); fix the line") from None
    return records


def alpaca_prompt(record: dict, opts: PromptOptions) -> str:
    """Study B's zero-shot prompt: the Alpaca template without output, ending after the marker."""
    if "instruction" not in record:
        raise EvalError("record has no 'instruction' field; expected the LLM-Adapters format")
    return templates.alpaca_eval_prompt(record, opts.template)


def builtin_chat_text(messages: list[dict]) -> str:
    """The built-in tokenizer's chat template, rendered with the generation prompt."""
    turns = "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
    return builtin_tokenizer.BOS + turns + builtin_tokenizer.ASSISTANT


def chat_renderer(tokenizer) -> Callable[[list[dict]], str]:
    """A renderer using an HF tokenizer's own chat template, dated as in training."""
    from kd_jax.data.tokenize import render_chat

    return lambda messages: render_chat(tokenizer, messages, add_generation_prompt=True)


def chat_prompt(record: dict, opts: PromptOptions) -> str:
    """The conversation up to (not including) its last assistant turn."""
    if "messages" not in record:  # the built-in data also comes as Alpaca records
        return alpaca_prompt(record, opts)
    messages = list(record["messages"])
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    return (opts.render_chat or builtin_chat_text)(messages)


# Read-only: they are defaults shared by every task.
ALPACA_RESPONSES = MappingProxyType(
    {"faithful": ex.faithful_response, "strict": ex.strict_response}
)


def _chat_response(prompt: str, generation: str) -> str:
    # Built-in records may also be rendered as Alpaca prompts; those keep Study B's split.
    if ex.RESPONSE_MARKER in prompt:
        return ex.faithful_response(prompt, generation)
    return ex.plain_response(prompt, generation)


CHAT_RESPONSES = MappingProxyType({"faithful": _chat_response})


@dataclasses.dataclass(frozen=True)
class Task:
    """One evaluation task.

    path     the test file, relative to the data root given for the task's family
    load     file path -> list of records
    prompt   (record, PromptOptions) -> prompt text
    response {mode: (prompt, generation) -> response text}; a missing mode uses "faithful"
    extract  {mode: response -> prediction or None}; one entry = the task has one rule
    correct  (prediction, gold) -> bool
    metrics  corpus metrics by name (see metrics.METRICS); "accuracy" = correct / all
    choices  record -> (labels, texts) for log-likelihood multiple choice, or None
    ident    (record, index) -> the example's id in predictions and response files
    refine   (prediction, response, record, rule) -> fields to add to the example's row
             (may replace "prediction"; a "correct" entry is the verdict): for scorers
             that need the whole record (IFEval's checkers, GPQA's choice fallback)
    """

    name: str
    family: str
    path: str
    extract: Mapping[str, Callable[[str], Any]]
    correct: Callable[[Any, Any], bool]
    load: Callable[[str], list[dict]] = load_json_list
    prompt: Callable[[dict, PromptOptions], str] = alpaca_prompt
    response: Mapping[str, Callable[[str, str], str]] = dataclasses.field(
        default_factory=lambda: ALPACA_RESPONSES
    )
    gold: Callable[[dict], Any] = lambda r: r["answer"]
    metrics: tuple[str, ...] = ("accuracy",)
    choices: Callable[[dict], tuple[list[str], list[str]]] | None = None
    ident: Callable[[dict, int], str] = lambda r, i: str(i)
    refine: Callable[[Any, str, dict, str], dict] | None = None

    def __post_init__(self):
        if "faithful" not in self.extract:
            raise ValueError(f"task {self.name}: `extract` needs a 'faithful' entry")

    def extraction(self, mode: str) -> str:
        """Which rule `mode` runs for this task: "faithful", "strict" or "single"."""
        if mode not in ex.MODES:
            raise EvalError(f"unknown extraction mode {mode!r}; use one of {', '.join(ex.MODES)}")
        if len(self.extract) == 1:
            return "single"
        if mode not in self.extract:
            raise EvalError(f"task {self.name} has no {mode!r} extraction rule")
        return mode

    def answer(self, prompt: str, generation: str, mode: str) -> tuple[str, Any]:
        """(response, prediction) of one generation under `mode`."""
        rule = self.extraction(mode)
        key = "faithful" if rule == "single" else rule
        response = self.response.get(key, self.response["faithful"])(prompt, generation)
        return response, self.extract[key](response)


# ---- multiple-choice parsing (for log-likelihood scoring) --------------------------------

_CHOICE = re.compile(
    r"(?:Answer|Solution|Ending|Option)(\d):\s*(.*?)"
    r"(?=\s*(?:Answer|Solution|Ending|Option)\d:|\s*Answer format:|$)",
    re.S,
)


def labelled_choices(prefix: str) -> Callable[[dict], tuple[list[str], list[str]]]:
    """Labels (`answer1`...) and texts of the choices written into an LLM-Adapters instruction."""

    def parse(record: dict) -> tuple[list[str], list[str]]:
        found = _CHOICE.findall(record["instruction"])
        if not found:
            raise EvalError(f"no '{prefix.capitalize()}N:' choices in: {record['instruction']!r}")
        return [f"{prefix}{n}" for n, _ in found], [t.strip() for _, t in found]

    return parse


def fixed_choices(labels: Sequence[str]) -> Callable[[dict], tuple[list[str], list[str]]]:
    return lambda record: (list(labels), list(labels))


# ---- the registry --------------------------------------------------------------------------

TASKS: dict[str, Task] = {}
GROUPS: dict[str, list[str]] = {}


def register(task: Task, groups: Sequence[str] = ()) -> Task:
    TASKS[task.name] = task
    for group in (task.family, *groups):
        GROUPS.setdefault(group, [])
        if task.name not in GROUPS[group]:
            GROUPS[group].append(task.name)
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise EvalError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def resolve(names: str | Sequence[str | Task]) -> list[Task]:
    """Tasks from names, group names ("math", "commonsense", "study_b", "builtin") or Tasks."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: list[Task] = []
    for n in names:
        picked = [n] if isinstance(n, Task) else [get_task(x) for x in GROUPS.get(n, [n])]
        out += [t for t in picked if t.name not in {o.name for o in out}]
    return out


def task_file(task: Task, data_root: str | Mapping[str, str]) -> str:
    """The task's test file under its root; a mapping picks the root by family, then "default"."""
    if isinstance(data_root, Mapping):
        root = data_root.get(task.family, data_root.get("default"))
        if root is None:
            raise EvalError(f"no data root for task {task.name} (family {task.family!r})")
    else:
        root = data_root
    path = os.path.join(root, task.path)
    if not os.path.exists(path):
        # Accept a root that already points inside `dataset/`.
        alt = os.path.join(root, task.path.split("/", 1)[-1])
        if task.path.startswith("dataset/") and os.path.exists(alt):
            return alt
        raise EvalError(f"{path}: test file for task {task.name} not found; check the data root")
    return path


# Study B's math tasks: (registry name, LLM-Adapters directory).
_MATH = [
    ("gsm8k", "gsm8k"),
    ("svamp", "SVAMP"),
    ("multiarith", "MultiArith"),
    ("singleeq", "SingleEq"),
    ("addsub", "AddSub"),
]
for _name, _dir in _MATH:
    register(
        Task(
            _name,
            "math",
            f"dataset/{_dir}/test.json",
            correct=ex.number_correct,
            extract={"faithful": ex.faithful_number, "strict": ex.strict_number},
        ),
        groups=("study_b",),
    )
_LETTERS = ["A", "B", "C", "D", "E"]
register(
    Task(
        "aqua",
        "math",
        "dataset/AQuA/test.json",
        correct=ex.label_correct,
        extract={"faithful": ex.first_match(_LETTERS), "strict": ex.last_match(_LETTERS)},
    ),
    groups=("study_b",),
)

# Study B's commonsense tasks: (name, directory, label prefix, number of labels in its regex).
_COMMONSENSE = [
    ("boolq", "boolq", None, 0),
    ("piqa", "piqa", "solution", 2),
    ("siqa", "social_i_qa", "answer", 5),
    ("hellaswag", "hellaswag", "ending", 4),
    ("winogrande", "winogrande", "option", 2),
    ("arc_e", "ARC-Easy", "answer", 5),
    ("arc_c", "ARC-Challenge", "answer", 5),
    ("obqa", "openbookqa", "answer", 5),
]
for _name, _dir, _prefix, _k in _COMMONSENSE:
    _labels = ["true", "false"] if _prefix is None else [f"{_prefix}{i}" for i in range(1, _k + 1)]
    register(
        Task(
            _name,
            "commonsense",
            f"dataset/{_dir}/test.json",
            correct=ex.label_correct,
            extract={"faithful": ex.first_match(_labels), "strict": ex.last_match(_labels)},
            choices=fixed_choices(_labels) if _prefix is None else labelled_choices(_prefix),
        ),
        groups=("study_b",),
    )

# The built-in CPU tasks (kd_jax.data.synthetic_tasks): "The answer is X ." read back by its own
# extractor; the cipher family is translation, so it also reports chrF. The `_alpaca`
# twins read the same test questions in Alpaca format and ask with Study B's prompt, for
# the CPU variants of Study B's configs (trained on Alpaca records).
for _family in synthetic_tasks.FAMILIES:
    _metrics = ("accuracy", "chrf") if _family == "cipher" else ("accuracy",)
    register(
        Task(
            _family,
            "builtin",
            f"chat/{_family}/test.jsonl",
            load=load_jsonl,
            prompt=chat_prompt,
            response=CHAT_RESPONSES,
            extract={"faithful": synthetic_tasks.extract_answer},
            correct=ex.text_correct,
            metrics=_metrics,
        ),
    )
    register(
        Task(
            f"{_family}_alpaca",
            "builtin_alpaca",
            f"alpaca/{_family}/test.jsonl",
            load=load_jsonl,
            extract={"faithful": synthetic_tasks.extract_answer},
            correct=ex.text_correct,
            metrics=_metrics,
        ),
    )


# Study A's low-resource domains, read from chat JSONL files that hold the conversation
# up to the reference reply and the reference in `answer` (prepared from Flores-200,
# DialogSum and ARC): `low_resource/<domain>/test.jsonl` under the data root. A
# translation or summary is the whole reply; ARC's answer is its last standalone letter.
def _whole_reply(response: str) -> str | None:
    return response.strip() or None


for _name, _extract, _metrics in [
    ("flores", _whole_reply, ("accuracy", "chrf")),
    ("dialogsum", _whole_reply, ("accuracy", "rouge_l")),
    ("arc_lr", ex.last_match(_LETTERS), ("accuracy",)),
]:
    register(
        Task(
            _name,
            "low_resource",
            f"low_resource/{_name.removesuffix('_lr')}/test.jsonl",
            load=load_jsonl,
            prompt=chat_prompt,
            response=CHAT_RESPONSES,
            extract={"faithful": _extract},
            correct=ex.label_correct if _name == "arc_lr" else ex.text_correct,
            metrics=_metrics,
        ),
        groups=("study_a_low_resource",),
    )
