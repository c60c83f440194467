"""Teacher-written synthetic data: few-shot prompts, parsing, filtering, the CLI."""

import json

import pytest

from kd_jax import synthesize as syn
from kd_jax import train
from kd_jax.main import main as cli

HUMAN = [
    {
        "messages": [
            {"role": "user", "content": f"q{i} ?"},
            {"role": "assistant", "content": f"so the answer is {i} ."},
        ]
    }
    for i in range(5)
]


def test_icl_prompt_and_parse():
    prompt = syn.icl_prompt(HUMAN[:2])
    assert prompt.endswith("Output: so the answer is 1 .\n\nInput:")
    assert syn.parse_icl(" q9 ?\nOutput: the answer is 9 .\n\nInput: q10") == (
        "q9 ?",
        "the answer is 9 .",
    )
    assert syn.parse_icl(" only a question") is None
    assert syn.parse_icl("\nOutput: no input") is None


def test_filtering_counts_every_drop():
    pairs = [
        ("new q ?", "the answer is 7 ."),
        ("NEW   q ?", "the answer is 8 ."),  # duplicate after normalisation
        ("q1 ?", "the answer is 1 ."),  # a human example's input
        ("other ?", "no final answer"),
        None,
    ]
    kept, counts = syn.filter_examples(
        pairs, task="t", answer_regex=syn.DEFAULT_ANSWER_REGEX, exclude_inputs={"q1 ?"}
    )
    assert [r["answer"] for r in kept] == ["7"]
    assert kept[0]["source"] == "synthetic" and kept[0]["messages"][0]["content"] == "new q ?"
    assert counts == {"kept": 1, "duplicate": 2, "answer_format": 1, "unparseable": 1}


def test_icl_with_a_stub_teacher():
    outs = iter(
        [" q7 ?\nOutput: the answer is 7 .", " q7 ?\nOutput: the answer is 7 .", " garbage"]
    )

    def generate(prompts):
        assert all(p.startswith(syn.ICL_HEADER) for p in prompts)
        return [next(outs) for _ in prompts]

    kept, counts = syn.synthesize_icl(
        generate, HUMAN, 3, shots=2, seed=0, task="t", answer_regex=syn.DEFAULT_ANSWER_REGEX
    )
    assert len(kept) == 1 and counts["duplicate"] == 1 and counts["unparseable"] == 1


@pytest.fixture(scope="module")
def trained(tiny_config, tmp_path_factory):
    """A two-step tiny run to generate from."""
    config = tiny_config("sft")
    config.train.num_steps = 2
    workdir = tmp_path_factory.mktemp("run") / "teacher"
    train.run(config, workdir)
    return workdir


def test_generate_cli_writes_completions_in_order(trained, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Sam has {i} apples ."}]} for i in range(5)]
    rows.append({"prompt": "<s><|user|>hi<|end|><|assistant|>"})
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    code = cli(
        [
            "generate",
            "--model",
            str(trained),
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "--max-new-tokens",
            "5",
            "--batch-size",
            "4",
        ]
    )
    assert code == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 6 and "Sam has 3 apples" in got[3]["prompt"]
    assert got[5]["prompt"] == rows[5]["prompt"]
    assert all(isinstance(g["completion"], str) for g in got)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{oops\n')
    assert (
        cli(
            [
                "generate",
                "--model",
                str(trained),
                "--prompts",
                str(bad),
                "--out",
                str(tmp_path / "x.jsonl"),
            ]
        )
        == 2
    )


def test_label_mode_cli_end_to_end(trained, tmp_path):
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in HUMAN))
    out = tmp_path / "synthetic.jsonl"
    code = cli(
        [
            "synthesize",
            "--model",
            str(trained),
            "--mode",
            "label",
            "--examples",
            str(inputs),
            "--out",
            str(out),
            "--max-new-tokens",
            "6",
            "--answer-regex",
            "(.+)",
            "--temperature",
            "0",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    counts = json.loads((tmp_path / "synthetic.jsonl.counts.json").read_text())
    assert sum(counts.values()) == len(HUMAN) and len(rows) == counts.get("kept", 0)
    assert all(r["messages"][0]["content"].startswith("q") for r in rows)
