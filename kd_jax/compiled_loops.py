"""The collectives inside a compiled program's loops, read from its optimized HLO text.

    loop_collectives(compiled.as_text(), scope="loss_chunk")
      -> [{"op": "all-reduce", "shape": "f32[8]", "bytes": 32, "loop": "%while.12"}, ...]

A loop is an HLO `while` whose op name (from `jax.named_scope`) contains `scope`; what
counts as inside is its body and every computation the body calls, nested loops
included. Each collective is listed once per program text, so the bytes are per
iteration of the loop that holds it. `own` says whether the collective comes from the
loop's own code (its op name is inside `scope`) or was scheduled into the loop body by
the compiler from elsewhere (TPU's async collective fusion overlaps, e.g., the next
layer scan's weight all-gathers with this loop's compute). `bytes` is the size of the
instruction's result (the gathered array of an all-gather, the summed one of an
all-reduce); an asynchronous
`-start` returns a tuple and counts its largest element, its `-done` is not counted.
"""

from __future__ import annotations

import math
import re

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
_BYTES = {
    "pred": 1,
    "s8": 1,
    "u8": 1,
    "bf16": 2,
    "f16": 2,
    "s16": 2,
    "u16": 2,
    "f32": 4,
    "s32": 4,
    "u32": 4,
    "f64": 8,
    "s64": 8,
    "u64": 8,
    "c64": 8,
}
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.+?) ([\w\-]+)\(")
_CALLED = re.compile(
    r"(?:body|condition|to_apply|calls|true_computation|false_computation)="
    r"%?([\w.\-]+)"
)
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")


def computations(hlo_text: str) -> dict[str, list[str]]:
    """Computation name -> its instruction lines."""
    out: dict[str, list[str]] = {}
    current = None
    for line in hlo_text.splitlines():
        header = _HEADER.match(line)
        if header and "=" not in line.split("{")[0].split("(")[0]:
            current = header.group(1)
            out[current] = []
        elif line.strip() == "}":
            current = None
        elif current is not None:
            out[current].append(line)
    return out


def _called(line: str) -> list[str]:
    names = _CALLED.findall(line)
    for group in _BRANCHES.findall(line):
        names += [n.strip().lstrip("%") for n in group.split(",") if n.strip()]
    return names


def _reachable(comps: dict[str, list[str]], root: str) -> set[str]:
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in comps:
            continue
        seen.add(name)
        for line in comps[name]:
            todo += _called(line)
    return seen


def array_bytes(type_text: str) -> int:
    """Bytes of an HLO type (`f32[8,512]{1,0}`); a tuple counts its largest element."""
    sizes = [
        _BYTES.get(dt, 4) * math.prod(int(d) for d in dims.split(",") if d)
        for dt, dims in _ARRAY.findall(type_text)
    ]
    return max(sizes, default=0)


def loop_collectives(hlo_text: str, scope: str) -> list[dict]:
    """Every collective inside the `while` loops whose op name contains `scope`."""
    comps = computations(hlo_text)
    out = []
    for lines in comps.values():
        for line in lines:
            instr = _INSTR.match(line)
            if not instr or instr.group(3) != "while" or scope not in line:
                continue
            body = re.search(r"body=%?([\w.\-]+)", line).group(1)
            for name in sorted(_reachable(comps, body)):
                for inner in comps[name]:
                    m = _INSTR.match(inner)
                    if not m:
                        continue
                    op = m.group(3).removesuffix("-start")
                    if op in COLLECTIVES and not m.group(3).endswith("-done"):
                        shape = _ARRAY.findall(m.group(2))
                        out.append(
                            {
                                "op": op,
                                "shape": " ".join(f"{dt}[{dims}]" for dt, dims in shape),
                                "bytes": array_bytes(m.group(2)),
                                "loop": instr.group(1),
                                "own": scope in inner,
                            }
                        )
    return out
