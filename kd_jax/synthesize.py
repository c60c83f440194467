"""`kd-jax synthesize`: the teacher writes labeled training data (Study A's stage 1).

Two ways, both writing chat JSONL ({"messages": [user, assistant], "task", "answer",
"source": "synthetic"}):

  icl    few-shot in-context prompting: each prompt shows `shots` human examples as
         "Input: ... / Output: ..." blocks and asks for one more; the continuation is
         parsed into a new (input, output) pair. This is the paper's recipe for large
         teachers that follow such prompts.
  label  the teacher answers given inputs through its chat template (the user turns of
         a JSONL file, e.g. unlabeled questions or the human set's own inputs). Small
         teachers that cannot follow a few-shot prompt can still label data this way.

Filtering is explicit and counted: answers must match `--answer-regex` (default: the
built-in tasks' "The answer is X ." form, whose X becomes the record's `answer`), inputs
are deduplicated against each other and against the human examples, and empty or
unparseable generations are dropped. The counts are printed and saved beside the output.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from kd_jax.errors import UserError

DEFAULT_ANSWER_REGEX = r"answer is (.+?) \.?\s*$"
ICL_HEADER = "Here are examples of a task. Write one new example in the same format.\n\n"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def user_and_answer(record: dict) -> tuple[str, str]:
    """(first user turn, last assistant turn) of a chat record."""
    msgs = record["messages"]
    user = next(m["content"] for m in msgs if m["role"] == "user")
    reply = [m["content"] for m in msgs if m["role"] == "assistant"]
    return user, reply[-1] if reply else ""


def icl_prompt(shots: list[dict]) -> str:
    blocks = [f"Input: {u}\nOutput: {a}\n\n" for u, a in map(user_and_answer, shots)]
    return ICL_HEADER + "".join(blocks) + "Input:"


def parse_icl(generation: str) -> tuple[str, str] | None:
    """The first "X\\nOutput: Y" of a continuation of `icl_prompt`, or None."""
    m = re.match(r"\s*(.+?)\s*\nOutput:\s*(.+?)\s*(?:\n\s*\n|\nInput:|$)", generation, re.S)
    if not m or not m.group(1).strip() or not m.group(2).strip():
        return None
    return m.group(1).strip(), m.group(2).strip()


def filter_examples(
    pairs: list[tuple[str, str] | None],
    *,
    task: str,
    answer_regex: str,
    exclude_inputs: set[str],
) -> tuple[list[dict], Counter]:
    """Chat records from (input, output) pairs; counts why others were dropped."""
    pattern = re.compile(answer_regex)
    seen = {_norm(x) for x in exclude_inputs}
    kept, counts = [], Counter()
    for pair in pairs:
        if pair is None:
            counts["unparseable"] += 1
            continue
        question, reply = pair
        found = pattern.search(reply)
        if not found:
            counts["answer_format"] += 1
            continue
        if _norm(question) in seen:
            counts["duplicate"] += 1
            continue
        seen.add(_norm(question))
        counts["kept"] += 1
        kept.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": reply},
                ],
                "task": task,
                "answer": found.group(1).strip(),
                "source": "synthetic",
            }
        )
    return kept, counts


def synthesize_icl(
    generate: Callable[[list[str]], list[str]],
    human: list[dict],
    n: int,
    *,
    shots: int,
    seed: int,
    task: str,
    answer_regex: str,
):
    """`n` few-shot prompts -> filtered synthetic records."""
    rng = random.Random(seed)
    prompts = [icl_prompt(rng.sample(human, min(shots, len(human)))) for _ in range(n)]
    pairs = [parse_icl(g) for g in generate(prompts)]
    exclude = {user_and_answer(r)[0] for r in human}
    return filter_examples(pairs, task=task, answer_regex=answer_regex, exclude_inputs=exclude)


def synthesize_labels(
    generate: Callable[[list[str]], list[str]],
    inputs: list[dict],
    render: Callable[[str], str],
    *,
    task: str,
    answer_regex: str,
    exclude: set[str] = frozenset(),
):
    """The teacher's answers to the user turns of `inputs` -> filtered records."""
    questions = [user_and_answer(r)[0] for r in inputs]
    outs = generate([render(q) for q in questions])
    pairs = [(q, o.strip()) if o.strip() else None for q, o in zip(questions, outs, strict=True)]
    return filter_examples(pairs, task=task, answer_regex=answer_regex, exclude_inputs=exclude)


def _read_jsonl(path: str) -> list[dict]:
    from kd_jax.data import read_records
    from kd_jax.data.builtin_paths import resolve

    source = read_records(resolve(path), fmt="chat")
    return [source[i] for i in range(len(source))]


def synthesize_file(
    model_path: str,
    examples: str,
    out: str | Path,
    *,
    mode: str = "icl",
    inputs: str | None = None,
    num: int = 1000,
    shots: int = 3,
    task: str = "synthetic",
    answer_regex: str = DEFAULT_ANSWER_REGEX,
    temperature: float = 1.0,
    max_new_tokens: int = 128,
    batch_size: int = 32,
    seed: int = 0,
    mesh: dict | None = None,
) -> dict:
    """Writes the synthetic records to `out` and their counts beside it; returns counts.
    `mesh` ({axis: size}) loads the teacher on that mesh (e.g. fsdp and tensor for a 70B
    model); on a mesh that spans hosts every host runs this and process 0 writes."""
    from kd_jax import sharding as shd
    from kd_jax.data import load_tokenizer, render_chat
    from kd_jax.models.loader import load_trained, run_rules
    from kd_jax.sampling import SamplingConfig, generate_text

    model, tok_dir = load_trained(model_path, mesh=shd.make_mesh(mesh) if mesh else None)
    rules = run_rules(model_path)
    tok = load_tokenizer(tok_dir)
    cfg = SamplingConfig.for_tokenizer(tok, max_new_tokens=max_new_tokens, temperature=temperature)

    def generate(prompts):
        return generate_text(
            model, tok, prompts, cfg, batch_size=batch_size, seed=seed, rules=rules
        )

    human = _read_jsonl(examples)
    if mode == "icl":
        records, counts = synthesize_icl(
            generate, human, num, shots=shots, seed=seed, task=task, answer_regex=answer_regex
        )
    else:

        def render(q):
            return render_chat(tok, [{"role": "user", "content": q}], add_generation_prompt=True)

        questions = _read_jsonl(inputs or examples)
        exclude = set() if inputs is None else {user_and_answer(r)[0] for r in human}
        records, counts = synthesize_labels(
            generate, questions, render, task=task, answer_regex=answer_regex, exclude=exclude
        )
    if not records:
        raise UserError(
            f"synthesize: no generation passed the filters ({dict(counts)}); the teacher "
            f"{model_path} does not yet write answers matching {answer_regex!r}: train it "
            "longer or pass an --answer-regex its replies match."
        )
    out = Path(out)
    if not shd.is_writer():
        return {"out": str(out), **counts}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    Path(str(out) + ".counts.json").write_text(json.dumps(dict(counts), indent=2) + "\n")
    return {"out": str(out), **counts}
