"""IFEval (Zhou et al., 2023): its prompts, strict and loose verdicts, and four accuracies.

Data: the official `input_data.jsonl` (one JSON object a line: `key`, `prompt`,
`instruction_id_list`, `kwargs`, one kwargs dict per instruction). The prompt is sent as
the user turn of a chat, decoded greedily (Study A's eval settings).

The 25 instruction checkers are not written here: they come from EleutherAI's
lm-evaluation-harness (`lm_eval.tasks.ifeval.instructions_registry`, the `[ifeval]`
extra), a maintained port of google-research's `instruction_following_eval` whose
checker classes are the official ones with formatting changes. It was chosen over the
lighter `if-verifiable` because that package imports `datasets` at import time anyway,
needs Python >= 3.11 and ships IFBench's checkers besides, and lm-eval is the harness
most published IFEval numbers come from. What this module owns is the official
*procedure* around the checkers (google-research `evaluation_lib.py`):
  strict  a checker is built from the instruction's kwargs (None values dropped, as the
          Hugging Face copy of the data carries every key), re-built with the prompt when
          it asks for one, and passes when the response is non-empty and it says so;
  loose   the same checker passes on any of eight variants of the response: as is,
          without its first line, its last line, or both, each also with every "*"
          removed;
  metrics prompt-level accuracy (all instructions of a prompt followed) and
          instruction-level accuracy (over all instructions), strict and loose.

Offline data: nltk's `punkt_tab` sentence model (nltk >= 3.9) is needed by the sentence
counters. It is never downloaded (lm-eval would download it on import when missing, so
it is looked up first): NLTK's own search path (NLTK_DATA, ~/nltk_data, ...) is tried
first, then the English punkt_tab model kd_jax ships in `evaluation/nltk_data/` (from the
NLTK data release, as bundled in llama-index-core's wheel); without either, the error
names the fix.
Determinism: langdetect is seeded (DetectorFactory.seed = 0), and each example's checkers
are built under `random.seed(f"ifeval:{key}")` (the global state is restored after).
The official code draws from the unseeded global `random` when a kwarg is unusable:
`keywords:letter_frequency` with a letter that is not a-z (keys 1122 "#" and 1129 "!"
in the released data) checks a random letter from string.ascii_letters instead, so
those two verdicts, and hence the official numbers, depend on that draw; kd_jax makes
the draw reproducible (same data, same verdicts) without changing what is drawn from.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Sequence

from kd_jax.evaluation.tasks import EvalError, load_jsonl

LOOSE_VARIANTS = 8
BUNDLED_NLTK_DATA = os.path.join(os.path.dirname(__file__), "nltk_data")
NLTK_FIX = (
    "point NLTK_DATA at a folder holding tokenizers/punkt_tab "
    "(fetch it once with `python -m nltk.downloader punkt_tab`)"
)


class IFEvalError(EvalError):
    """IFEval cannot run here (missing extra or NLTK data), or a record is malformed."""


def _find_punkt(nltk) -> bool:
    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
    except LookupError:
        return False
    return True


@functools.cache
def _registry() -> dict:
    """lm-eval's INSTRUCTION_DICT, after checking that nothing needs downloading."""
    try:
        import langdetect
        import nltk
    except ImportError as e:
        raise IFEvalError(
            f"IFEval needs {e.name}; install the extra: pip install 'kd_jax[ifeval]'"
        ) from None
    if not _find_punkt(nltk):
        if os.path.isdir(BUNDLED_NLTK_DATA):
            nltk.data.path.append(BUNDLED_NLTK_DATA)
        if not _find_punkt(nltk):
            raise IFEvalError(f"IFEval needs NLTK's punkt_tab sentence model; {NLTK_FIX}")
    try:
        from lm_eval.tasks.ifeval import instructions_registry
    except ImportError:
        raise IFEvalError(
            "IFEval's checkers come from lm-eval; install the extra: pip install 'kd_jax[ifeval]'"
        ) from None
    langdetect.DetectorFactory.seed = 0
    return dict(instructions_registry.INSTRUCTION_DICT)


def load(path: str) -> list[dict]:
    """input_data.jsonl, checked: every record has its key, prompt and one kwargs per id."""
    records = load_jsonl(path)
    for n, r in enumerate(records, 1):
        missing = [k for k in ("key", "prompt", "instruction_id_list", "kwargs") if k not in r]
        if missing:
            raise IFEvalError(f"{path}:{n}: no {', '.join(missing)}; expected input_data.jsonl")
        if len(r["kwargs"]) != len(r["instruction_id_list"]):
            raise IFEvalError(
                f"{path}:{n}: {len(r['kwargs'])} kwargs for "
                f"{len(r['instruction_id_list'])} instructions"
            )
    return records


def prompt_messages(record: dict) -> list[dict]:
    return [{"role": "user", "content": record["prompt"]}]


def gold(record: dict) -> dict:
    """What the verdict depends on besides the response."""
    return {k: record[k] for k in ("key", "prompt", "instruction_id_list", "kwargs")}


def _build(registry: dict, example: dict) -> list:
    out = []
    for instruction_id, kwargs in zip(
        example["instruction_id_list"], example["kwargs"], strict=True
    ):
        if instruction_id not in registry:
            raise IFEvalError(
                f"unknown IFEval instruction {instruction_id!r} "
                f"(key {example['key']}); fix the input file"
            )
        checker = registry[instruction_id](instruction_id)
        checker.build_description(**{k: v for k, v in (kwargs or {}).items() if v is not None})
        args = checker.get_instruction_args()
        if args and "prompt" in args:
            checker.build_description(prompt=example["prompt"])
        out.append(checker)
    return out


def _checkers(example: dict) -> list:
    """The example's checkers, built under a per-key seed (see the module docstring)."""
    registry = _registry()
    state = random.getstate()
    random.seed(f"ifeval:{example['key']}")
    try:
        return _build(registry, example)
    finally:
        random.setstate(state)


def loose_variants(response: str) -> list[str]:
    """The response as is, without its first / last / both lines, each also without "*"."""
    lines = response.split("\n")
    cut = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    variants = [cut[0], cut[0].replace("*", ""), *cut[1:], *(c.replace("*", "") for c in cut[1:])]
    assert len(variants) == LOOSE_VARIANTS
    return variants


def _passes(checker, text: str) -> bool:
    return bool(text.strip()) and bool(checker.check_following(text))


def verdicts(response: str | None, example: dict) -> dict:
    """{"follow_strict": [bool per instruction], "follow_loose": [...]} of one response."""
    response = response or ""
    variants = loose_variants(response)
    strict, loose = [], []
    for checker in _checkers(example):
        strict.append(_passes(checker, response))
        loose.append(any(_passes(checker, v) for v in variants))
    return {"follow_strict": strict, "follow_loose": loose}


def response(prompt: str, generation: str) -> str:
    """The generation as written: IFEval judges its exact text (leading spaces included)."""
    del prompt
    return generation


def follows_all(prediction, example: dict) -> bool:
    """`correct` of a row: prompt-level strict."""
    return all(verdicts(prediction, example)["follow_strict"])


def _level(rows: Sequence[dict], key: str, prompt_level: bool) -> float:
    if not rows:
        raise ValueError("IFEval accuracy of zero examples is undefined")
    if prompt_level:
        return sum(all(r[key]) for r in rows) / len(rows)
    flat = [v for r in rows for v in r[key]]
    return sum(flat) / len(flat)


METRICS = {
    "prompt_strict": lambda rows: _level(rows, "follow_strict", True),
    "inst_strict": lambda rows: _level(rows, "follow_strict", False),
    "prompt_loose": lambda rows: _level(rows, "follow_loose", True),
    "inst_loose": lambda rows: _level(rows, "follow_loose", False),
}
