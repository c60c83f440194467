"""Tokenization: chat-template masks token by token, train_on_inputs, Alpaca (Study B) rules."""

import numpy as np
import pytest

from kd_jax.data import DataError, ExampleTokenizer, build_tokenizer, load_tokenizer, templates

CONVERSATION = [
    {"role": "system", "content": "Be brief ."},
    {"role": "user", "content": "Ana has 5 pens . She gets 3 more . How many ?"},
    {"role": "assistant", "content": "5 + 3 = 8 . The answer is 8 ."},
    {"role": "user", "content": "Then she loses 2 . How many now ?"},
    {"role": "assistant", "content": "8 - 2 = 6 . The answer is 6 ."},
    {"role": "user", "content": "And 10 more ?"},
    {"role": "assistant", "content": "The answer is 16 ."},
]

# Like Qwen2.5's template: a default system turn, a newline after each role header and
# after each end-of-turn token. Neither newline may be trained.
QWEN_LIKE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|system|>\\nBe brief .<|end|>\\n' }}{% endif %}"
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer(build_tokenizer(str(tmp_path_factory.mktemp("tok"))))


def reference_token_mask(tokens: list[str], header_newline: bool) -> list[bool]:
    """Supervised = after an <|assistant|> header, up to and including its <|end|>."""
    out, inside, in_header = [], False, False
    for t in tokens:
        if t == "<|assistant|>":
            out.append(False)
            inside, in_header = True, header_newline
            continue
        if in_header and t in ("\n", "▁"):  # the header's newline ("▁" starts a segment)
            out.append(False)
            in_header = t != "\n"
            continue
        in_header = False
        out.append(inside)
        if t == "<|end|>":
            inside = False
    return out


@pytest.mark.parametrize("template", ["builtin", "qwen_like"])
@pytest.mark.parametrize("drop_system", [False, True])
def test_chat_mask_token_by_token(tok, template, drop_system):
    if template == "qwen_like":
        tok.chat_template, saved = QWEN_LIKE, tok.chat_template
    try:
        messages = CONVERSATION[1:] if drop_system else CONVERSATION
        fn = ExampleTokenizer(tok, max_length=512)
        ids, token_mask = fn.chat_tokens(messages)
        rendered = tok.apply_chat_template(messages, tokenize=False)
        assert list(ids) == tok(rendered, add_special_tokens=False)["input_ids"]
        tokens = tok.convert_ids_to_tokens(ids.tolist())
        expected = reference_token_mask(tokens, header_newline=template == "qwen_like")
        assert token_mask.tolist() == expected
        # Each supervised run decodes to exactly one assistant turn plus its <|end|>.
        runs, cur = [], []
        for i, m in zip(ids, token_mask, strict=True):
            if m:
                cur.append(int(i))
            elif cur:
                runs.append(cur)
                cur = []
        runs += [cur] if cur else []
        assistant = [m["content"] for m in messages if m["role"] == "assistant"]
        assert [tok.decode(r) for r in runs] == [a + "<|end|>" for a in assistant]
    finally:
        if template == "qwen_like":
            tok.chat_template = saved


def test_example_layout_shifts_mask_onto_targets(tok):
    fn = ExampleTokenizer(tok, max_length=512)
    ex = fn({"messages": CONVERSATION})
    ids, token_mask = fn.chat_tokens(CONVERSATION)
    L = len(ids)
    assert ex["inputs"].tolist() == ids.tolist()
    assert ex["targets"][:-1].tolist() == ids[1:].tolist() and ex["targets"][-1] == 0
    assert ex["loss_mask"][:-1].tolist() == token_mask[1:].astype(np.float32).tolist()
    assert ex["loss_mask"][-1] == 0 and ex["truncated"] == 0
    assert ex["inputs"].dtype == np.int32 and ex["loss_mask"].dtype == np.float32
    # The final <|end|> is a target (predicted from the answer's last token).
    assert ex["targets"][L - 2] == tok.convert_tokens_to_ids("<|end|>") and ex["loss_mask"][L - 2]


def test_train_on_inputs_supervises_every_next_token(tok):
    ex = ExampleTokenizer(tok, max_length=512, train_on_inputs=True)({"messages": CONVERSATION})
    assert ex["loss_mask"][:-1].all() and ex["loss_mask"][-1] == 0


def test_chat_truncation_is_flagged(tok):
    fn = ExampleTokenizer(tok, max_length=20)
    ex = fn({"messages": CONVERSATION})
    assert len(ex["inputs"]) == 20 and ex["truncated"] == 1
    full, _ = fn.chat_tokens(CONVERSATION)
    assert ex["inputs"].tolist() == full[:20].tolist()


def test_template_that_rewrites_history_is_a_clear_error(tok):
    saved = tok.chat_template
    # Drops earlier assistant turns once a later one exists (as reasoning templates do).
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
        "{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endif %}{% endfor %}"
    )
    try:
        with pytest.raises(DataError, match="prefix-stable template or data.train_on_inputs"):
            ExampleTokenizer(tok, max_length=512).chat_tokens(CONVERSATION)
    finally:
        tok.chat_template = saved


# Study B's training prompt (generative/finetune.py, generate_prompt), written out with
# its 16-space indentation and trailing spaces: "request. " with input, "request.  "
# without.
STUDY_B_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request. \n\n"
    "                ### Instruction:\n                Add .\n                \n"
    "                ### Input:\n                2 3\n                \n"
    "                ### Response:\n                5"
)
STUDY_B_EVAL_NO_INPUT = (  # generative/evaluate.py: blank lines unindented, one space
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request. \n\n                ### Instruction:\n                Add .\n\n"
    "                ### Response:\n                "
)


def test_alpaca_templates_golden():
    rec = {"instruction": "Add .", "input": "2 3", "output": "5"}
    assert templates.render_alpaca(rec, "kd_generalization", with_output=True) == STUDY_B_WITH_INPUT
    no_input = {**rec, "input": ""}
    assert templates.alpaca_eval_prompt(no_input, "kd_generalization") == STUDY_B_EVAL_NO_INPUT
    clean = templates.render_alpaca(no_input, "alpaca", with_output=True)
    assert clean.endswith("### Instruction:\nAdd .\n\n### Response:\n5")
    a, b = templates.template_info("alpaca"), templates.template_info("kd_generalization")
    assert (
        a["alpaca_template"] == "alpaca" and a["alpaca_template_sha1"] != b["alpaca_template_sha1"]
    )
    with pytest.raises(DataError, match="unknown data.alpaca_template 'vicuna'"):
        templates.get_template("vicuna")


@pytest.mark.parametrize("template", ["alpaca", "kd_generalization"])
def test_alpaca_tokenization_follows_study_b(tok, template):
    rec = {
        "instruction": "Sam has 4 pens . He gets 3 more .",
        "input": "",
        "output": "The answer is 7 .",
    }
    full_text = templates.render_alpaca(rec, template, with_output=True)
    prompt_text = templates.render_alpaca(rec, template, with_output=False)
    full = tok(full_text)["input_ids"]  # with BOS, as Study B's tokenizer call
    n_prompt = len(tok(prompt_text)["input_ids"])
    assert full[0] == tok.bos_token_id

    fn = ExampleTokenizer(tok, max_length=512, alpaca_template=template)
    ids, mask, truncated = fn.alpaca_tokens(rec)
    assert ids.tolist() == full + [tok.eos_token_id] and not truncated  # EOS: there is room
    assert not mask[:n_prompt].any() and mask[n_prompt:].all()
    ids_all, mask_all, _ = ExampleTokenizer(
        tok, max_length=512, train_on_inputs=True, alpaca_template=template
    ).alpaca_tokens(rec)
    assert ids_all.tolist() == ids.tolist() and mask_all.all()

    # Cut exactly at the length: no room, so no EOS; the example is flagged truncated.
    short = ExampleTokenizer(tok, max_length=len(full) - 1, alpaca_template=template)
    ids_s, _, truncated_s = short.alpaca_tokens(rec)
    assert ids_s.tolist() == full[:-1] and truncated_s
    assert short(rec)["truncated"] == 1
    exact = ExampleTokenizer(tok, max_length=len(full), alpaca_template=template)
    assert exact.alpaca_tokens(rec)[0].tolist() == full  # fits, but no room for EOS


def test_tokenizer_errors(tmp_path):
    with pytest.raises(DataError, match="set data.tokenizer"):
        load_tokenizer("")
    with pytest.raises(DataError, match="tokenizer folder not found"):
        load_tokenizer(str(tmp_path / "missing"))
    with pytest.raises(DataError, match="cannot load a tokenizer"):
        load_tokenizer(str(tmp_path))


def test_llama3_chat_date_is_the_training_one_at_inference(tmp_path):
    """Llama 3.2's template stamps today's date unless given one: training pins it, and
    generate, eval and synthesis prompts must carry the same line, not today's."""
    import json
    from pathlib import Path

    from kd_jax.data import render_chat
    from kd_jax.evaluation.tasks import chat_renderer
    from kd_jax.generate import read_prompts

    template = Path(__file__).parent / "fixtures" / "chat_templates" / "llama-3.2-instruct.jinja"
    hf = load_tokenizer(build_tokenizer(str(tmp_path / "tok")))
    hf.chat_template = template.read_text()
    messages = CONVERSATION[:2]
    plain = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "Today Date: 26 Jul 2024" not in plain, "the template must date a plain render"

    trained = ExampleTokenizer(hf, max_length=512).render(CONVERSATION[:3])
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text(json.dumps({"messages": CONVERSATION[:3]}) + "\n")
    at_inference = [
        render_chat(hf, messages, add_generation_prompt=True),  # synthesize, quickstart
        chat_renderer(hf)(messages),  # kd-jax eval
        read_prompts(prompts_file, hf)[0],  # kd-jax generate
    ]
    for prompt in at_inference:
        assert "Today Date: 26 Jul 2024" in prompt
        assert trained.startswith(prompt), "the prompt is the training text up to the answer"
