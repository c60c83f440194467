"""Built-in synthetic tasks for the CPU path: generation, JSONL writing, answer checking.

Five task families, each record carrying a machine-checkable `answer` and its `task`:
  arith    2-3 step add/subtract word problems with a worked rationale
  compare  which of two numbers (0-999) is larger or smaller
  count    how often a word occurs in a list
  sort     sort a short list of numbers, ascending or descending
  cipher   translation to and from "Zorbic", a tiny made-up language with its own word
           order (the low-resource domain of the two-stage study)

The teacher-scale data has genuine ambiguity: each question admits several valid
rationales (step order, phrasing, intermediate forms) drawn at random, so a teacher's
distribution at T=1 carries more than the label. The "human" sets (arith, cipher) are
smaller and noisier: terser rationales and a few wrong final answers (`noisy: true`;
`answer` stays the gold one). Every assistant reply ends "The answer is X ." and
`extract_answer` reads X back. Everything is a pure function of the seed.
"""

from __future__ import annotations

import random
import re

FAMILIES = ("arith", "compare", "count", "sort", "cipher")
# Records per (family, split) at scale=1; human sets exist only where a study uses them.
DEFAULT_SIZES = {
    "arith": {"train": 20000, "human": 1000, "test": 1000},
    "compare": {"train": 4000, "test": 500},
    "count": {"train": 4000, "test": 500},
    "sort": {"train": 4000, "test": 500},
    "cipher": {"train": 5000, "human": 300, "test": 500},
}
HUMAN_NOISE = 0.05  # fraction of human records whose final answer is wrong
FOLLOWUP_RATE = 0.1  # fraction of arith chat records with a second user/assistant turn

NAMES = ["Max", "Ana", "Leo", "Mia", "Sam", "Zoe", "Tom", "Eva", "Ben", "Ivy", "Raj", "Kim"]
HE_SHE = {n: ("he" if n in ("Max", "Leo", "Sam", "Tom", "Ben", "Raj") else "she") for n in NAMES}
OBJECTS = [
    "apples",
    "books",
    "coins",
    "cards",
    "shells",
    "stamps",
    "marbles",
    "pens",
    "stickers",
    "cookies",
    "rocks",
    "flowers",
]
GAIN_VERBS = ["gets", "buys", "finds", "receives", "wins"]
LOSS_VERBS = ["gives away", "loses", "sells", "drops", "uses"]
ITEMS = ["apple", "pear", "plum", "fig", "lime", "kiwi"]

# Zorbic: noun phrases are noun-adjective-determiner, the verb goes last, plural adds "ki".
ZORBIC = {
    "the": "ta",
    "a": "ne",
    "two": "du",
    "three": "tre",
    "red": "vela",
    "big": "gorm",
    "small": "tiri",
    "old": "osk",
    "happy": "lumi",
    "cat": "miro",
    "dog": "dopo",
    "bird": "fen",
    "fish": "sulo",
    "child": "kaba",
    "tree": "arvo",
    "house": "domu",
    "boat": "navi",
    "sees": "sena",
    "likes": "amo",
    "follows": "tuki",
    "finds": "ruda",
    "helps": "avu",
}
_DETS, _NUMS = ["the", "a"], ["two", "three"]
_ADJS = ["red", "big", "small", "old", "happy"]
_NOUNS = ["cat", "dog", "bird", "fish", "child", "tree", "house", "boat"]
_VERBS = ["sees", "likes", "follows", "finds", "helps"]


class Problem:
    """One question with its rationale and gold answer; `turns` adds follow-up exchanges."""

    def __init__(self, task: str, question: str, reply: str, answer: str, noisy: bool = False):
        self.task, self.answer, self.noisy = task, answer, noisy
        self.turns = [(question, reply)]

    def chat(self) -> dict:
        messages = []
        for q, r in self.turns:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": r}]
        rec = {"messages": messages, "task": self.task, "answer": self.answer}
        return {**rec, "noisy": True} if self.noisy else rec

    def alpaca(self) -> dict:
        q, r = self.turns[0]
        answer = self.answer if len(self.turns) == 1 else extract_answer(r)
        rec = {"instruction": q, "input": "", "output": r, "answer": answer, "task": self.task}
        return {**rec, "noisy": True} if self.noisy else rec


def _end(rng: random.Random, answer: str, human: bool) -> str:
    if human:
        return f"The answer is {answer} ."
    lead = rng.choice(["The answer is", "So the answer is", "Thus the answer is"])
    return f"{lead} {answer} ."


def _slip(rng: random.Random, value: int) -> int:
    return max(0, value + rng.choice([-3, -2, -1, 1, 2, 3]))


# ---- arith -----------------------------------------------------------------------------


def _arith_question(rng, name, obj, start, steps, human):
    opener = rng.choice(
        ["{n} has {a} {o} .", "{n} starts with {a} {o} ."]
        + ([] if human else ["There are {a} {o} in {n} 's bag ."])
    )
    parts = [opener.format(n=name, a=start, o=obj)]
    for i, (op, amt) in enumerate(steps):
        verb = rng.choice(GAIN_VERBS if op == "+" else LOSS_VERBS)
        if i == 0:
            lead = HE_SHE[name].capitalize()
        else:
            lead = rng.choice(["Then", "Next", "Later"]) + " " + HE_SHE[name]
        more = " more" if op == "+" and rng.random() < 0.5 else ""
        parts.append(f"{lead} {verb} {amt}{more} .")
    ask = rng.choice(
        [f"How many {obj} does {name} have now ?", f"How many {obj} are left ?"]
        if any(op == "-" for op, _ in steps)
        else [f"How many {obj} does {name} have now ?"]
    )
    return " ".join(parts + [ask])


def _chain(start, steps):
    out, total = [], start
    for op, amt in steps:
        new = total + amt if op == "+" else total - amt
        out.append(f"{total} {op} {amt} = {new} .")
        total = new
    return out


def _arith_rationales(name, obj, start, steps, answer):
    """Every valid way this question may be worked; the caller picks one."""
    chain = _chain(start, steps)
    words = ["First ,", "Then ,", "Finally ,"] if len(steps) == 3 else ["First ,", "Then ,"]
    styles = {
        "chain": " ".join(chain),
        "worded": " ".join(f"{w} {c}" for w, c in zip(words, chain, strict=True)),
        "story": f"{name} has {start} {obj} . " + " ".join(chain),
        "one_line": f"{start} " + " ".join(f"{op} {amt}" for op, amt in steps) + f" = {answer} .",
    }
    gains = [a for op, a in steps if op == "+"]
    losses = [a for op, a in steps if op == "-"]
    reordered = [("+", a) for a in gains] + [("-", a) for a in losses]
    if reordered != list(steps):  # adding first keeps every intermediate non-negative
        styles["gains_first"] = "Add first . " + " ".join(_chain(start, reordered))
    if gains and losses:
        g, lo = sum(gains), sum(losses)
        sums = []
        if len(gains) > 1:
            sums.append(" + ".join(map(str, gains)) + f" = {g} .")
        if len(losses) > 1:
            sums.append(" + ".join(map(str, losses)) + f" = {lo} .")
        if g >= lo:
            net = f"{g} - {lo} = {g - lo} . {start} + {g - lo}"
        else:
            net = f"{lo} - {g} = {lo - g} . {start} - {lo - g}"
        styles["net"] = " ".join(sums + [f"Net change : {net} = {answer} ."])
    return styles


def gen_arith(rng: random.Random, human: bool = False, followup: bool = False) -> Problem:
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    start = rng.randint(5, 60)
    total, steps = start, []
    for _ in range(rng.choice([2, 3])):
        if total >= 3 and rng.random() < 0.5:
            steps.append(("-", rng.randint(1, min(total, 30))))
        else:
            steps.append(("+", rng.randint(1, 30)))
        total = total + steps[-1][1] if steps[-1][0] == "+" else total - steps[-1][1]
    q = _arith_question(rng, name, obj, start, steps, human)
    styles = _arith_rationales(name, obj, start, steps, total)
    noisy = human and rng.random() < HUMAN_NOISE
    if human:
        style = rng.choices(["one_line", "chain", "bare"], weights=[5, 3, 2])[0]
        said = _slip(rng, total) if noisy else total
        body = "" if style == "bare" else styles[style].replace(f"= {total} .", f"= {said} .")
        reply = (body + " " + _end(rng, str(said), True)).strip()
    else:
        reply = styles[rng.choice(sorted(styles))] + " " + _end(rng, str(total), False)
    p = Problem("arith", q, reply, str(total), noisy)
    if followup and not human:
        amt = rng.randint(1, 20)
        verb = rng.choice(GAIN_VERBS)
        p.turns.append(
            (
                f"Then {HE_SHE[name]} {verb} {amt} more . How many now ?",
                f"{total} + {amt} = {total + amt} . " + _end(rng, str(total + amt), False),
            )
        )
        p.answer = str(total + amt)
    return p


# ---- compare, count, sort --------------------------------------------------------------


def gen_compare(rng: random.Random, human: bool = False) -> Problem:
    hi = rng.choice([99, 999])
    x = rng.randint(0, hi)
    y = rng.choice(
        [
            v
            for v in (x + rng.randint(1, 9), x - rng.randint(1, 9), rng.randint(0, hi))
            if 0 <= v <= 999 and v != x
        ]
        or [x + 1]
    )
    larger = rng.random() < 0.5
    word = rng.choice(["larger", "bigger"]) if larger else "smaller"
    q = rng.choice([f"Which number is {word} : {x} or {y} ?", f"Which is {word} , {x} or {y} ?"])
    big, small = max(x, y), min(x, y)
    ans = str(big if larger else small)
    styles = [
        f"{big} is larger than {small} .",
        f"{small} < {big} .",
        f"{small} is smaller than {big} .",
    ]
    if len(str(x)) != len(str(y)):
        styles.append(f"{big} has more digits than {small} .")
    elif str(x)[0] != str(y)[0]:
        styles.append(f"Compare the first digits : {str(small)[0]} < {str(big)[0]} .")
    return Problem("compare", q, rng.choice(styles) + " " + _end(rng, ans, False), ans)


def gen_count(rng: random.Random, human: bool = False) -> Problem:
    items = [rng.choice(ITEMS) for _ in range(rng.randint(4, 9))]
    w = rng.choice(items) if rng.random() < 0.85 else rng.choice(ITEMS)
    n = items.count(w)
    listed = " ".join(items)
    q = rng.choice(
        [f"How many times does {w} appear in : {listed} ?", f"Count the {w} in : {listed} ."]
    )
    pos = [str(i + 1) for i, v in enumerate(items) if v == w]
    running, c = [], 0
    for v in items:
        c += v == w
        running.append(str(c))
    styles = [f"Running count : {' , '.join(running)} ."]
    if pos:
        styles.append(f"{w} is at position{'s' * (len(pos) > 1)} {' , '.join(pos)} .")
    else:
        styles.append(f"{w} is not in the list .")
    return Problem("count", q, rng.choice(styles) + " " + _end(rng, str(n), False), str(n))


def gen_sort(rng: random.Random, human: bool = False) -> Problem:
    nums = rng.sample(range(0, rng.choice([100, 1000])), rng.randint(3, 6))
    asc = rng.random() < 0.5
    order = sorted(nums, reverse=not asc)
    listed, out = " ".join(map(str, nums)), " ".join(map(str, order))
    way = "ascending" if asc else "descending"
    span = "smallest to largest" if asc else "largest to smallest"
    q = rng.choice(
        [
            f"Sort in {way} order : {listed} .",
            f"Put these numbers from {span} : {listed} .",
        ]
    )
    rel = " < " if asc else " > "
    first = "smallest" if asc else "largest"
    styles = [
        rel.join(map(str, order)) + " .",
        f"The {first} is {order[0]} , then " + " , then ".join(map(str, order[1:])) + " .",
        " ".join(f"Take {v} ." for v in order),
    ]
    return Problem("sort", q, rng.choice(styles) + " " + _end(rng, out, False), out)


# ---- cipher (Zorbic) -------------------------------------------------------------------


def _noun_phrase(rng):
    plural = rng.random() < 0.3
    det = rng.choice(_NUMS if plural else _DETS)
    adj = rng.choice(_ADJS) if rng.random() < 0.6 else None
    noun = rng.choice(_NOUNS)
    eng_noun = ("children" if noun == "child" else noun + "s") if plural else noun
    eng = [det] + ([adj] if adj else []) + [eng_noun]
    zor = [ZORBIC[noun] + ("ki" if plural else "")] + ([ZORBIC[adj]] if adj else []) + [ZORBIC[det]]
    gloss = [f"{eng_noun} = {zor[0]}"] + ([f"{adj} = {ZORBIC[adj]}"] if adj else [])
    return eng, zor, gloss + [f"{det} = {ZORBIC[det]}"], plural


def gen_cipher(rng: random.Random, human: bool = False) -> Problem:
    subj, obj, verb = _noun_phrase(rng), _noun_phrase(rng), rng.choice(_VERBS)
    eng_verb = verb[:-1] if subj[3] else verb  # plural subjects: "two cats see"
    english = " ".join(subj[0] + [eng_verb] + obj[0])
    zorbic = " ".join(subj[1] + obj[1] + [ZORBIC[verb]])
    to_zorbic = rng.random() < 0.7
    src, tgt = (english, zorbic) if to_zorbic else (zorbic, english)
    q = f"Translate to {'Zorbic' if to_zorbic else 'English'} : {src} ."
    noisy = human and rng.random() < HUMAN_NOISE
    said = tgt
    if noisy:  # one word swapped for another of the language: a plausible human slip
        words = said.split()
        i = rng.randrange(len(words))
        pool = list(ZORBIC.values()) if to_zorbic else list(ZORBIC)
        words[i] = rng.choice([w for w in pool if w != words[i]])
        said = " ".join(words)
    if human or rng.random() < 0.4:
        reply = _end(rng, said, human)
    else:
        gloss = " , ".join(subj[2] + obj[2] + [f"{eng_verb} = {ZORBIC[verb]}"])
        order = "The verb goes last ." if to_zorbic else "The verb goes after the subject ."
        reply = f"Word by word : {gloss} . {order} " + _end(rng, said, False)
    return Problem("cipher", q, reply, tgt, noisy)


GENERATORS = {
    "arith": gen_arith,
    "compare": gen_compare,
    "count": gen_count,
    "sort": gen_sort,
    "cipher": gen_cipher,
}


def generate(family: str, split: str, n: int, seed: int, exclude: set[str] = frozenset()):
    """`n` problems of one family and split; questions in `exclude` (the test set) are redrawn."""
    rng = random.Random(f"kd_jax-builtin-{seed}-{family}-{split}")
    human = split == "human"
    out = []
    while len(out) < n:
        if family == "arith":
            p = gen_arith(rng, human, followup=split == "train" and rng.random() < FOLLOWUP_RATE)
        else:
            p = GENERATORS[family](rng, human)
        if p.turns[0][0] not in exclude:
            out.append(p)
    return out


_ANSWER_RE = re.compile(r"answer is (.*?) \.")


def extract_answer(text: str) -> str | None:
    """X from the last "... answer is X ." of a reply; None when the reply has none."""
    found = _ANSWER_RE.findall(text)
    return found[-1].strip() if found else None


def is_correct(completion: str, answer: str) -> bool:
    got = extract_answer(completion)
    return got is not None and " ".join(got.split()) == " ".join(str(answer).split())
