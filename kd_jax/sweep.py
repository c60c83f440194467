"""`kd-jax sweep`: train, evaluate and report every condition of a config file's sweep.

    kd-jax sweep --config configs/study_b_main.py --workdir runs/study_b [--runlocal]
        [--only SUBSTRING] [--set key=value ...] [--print-commands] [--print-eval-commands]

A study config file is a module with
  get_config(arg) -> ConfigDict        one condition, `arg` = "key=value,...[,runlocal]"
  sweep() -> list[str]                 the condition args of the whole grid
and optionally
  dependencies(arg) -> {config key: condition arg}
        runs this condition needs first; the key is set to that run's workdir, e.g.
        {"teacher.workdir": "model=qwen2.5-7b,method=sft,task=math"}. Dependencies
        that are not in sweep() (a teacher to train first) are run all the same.
  evaluation(arg) -> dict              keyword arguments of
        kd_jax.evaluation.run_eval.evaluate_run (data_root, teacher, meta, checkpoint, ...);
        the default evaluates KD runs against their own teacher (teacher="auto").

Each condition runs in WORKDIR/<name>, its arg made into a folder name ("pair=a-b,tau=2"
-> "pair-a-b_tau-2"). A condition whose latest checkpoint is its last step is skipped;
an unfinished one resumes (train.run resumes by itself); a failed one is reported and
its dependents are skipped. Then every finished run is evaluated (once: an evaluation
newer than the last checkpoint is kept) and WORKDIR/report is written.
`--print-commands` prints one `kd-jax train` line per condition, dependencies first,
for a cluster scheduler; `--print-eval-commands` prints the eval and report lines.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import logging
import shlex
import sys
import time
import traceback
from pathlib import Path

log = logging.getLogger("kd_jax.sweep")
RUNLOCAL = "runlocal"


# ---- condition args ----------------------------------------------------------------------


def parse_arg(arg: str | None) -> dict:
    """ "a=1,b=x,runlocal" -> {"a": "1", "b": "x", "runlocal": True} (values stay strings)."""
    out: dict = {}
    for part in (arg or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        out[key.strip()] = value.strip() if sep else True
    return out


def format_arg(fields: dict) -> str:
    """The inverse of parse_arg; flags (True) are written bare, False/None dropped."""
    parts = []
    for k, v in fields.items():
        if v is True:
            parts.append(k)
        elif v is not False and v is not None:
            parts.append(f"{k}={v}")
    return ",".join(parts)


def condition_name(arg: str) -> str:
    """A folder name for a condition: its arg without `runlocal`, made path-safe."""
    fields = {k: v for k, v in parse_arg(arg).items() if k != RUNLOCAL}
    name = "_".join(k if v is True else f"{k}-{v}" for k, v in fields.items())
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "default"


def _with_runlocal(arg: str, runlocal: bool) -> str:
    fields = parse_arg(arg)
    if runlocal:
        fields[RUNLOCAL] = True
    return format_arg(fields)


# ---- config modules ----------------------------------------------------------------------


def load_module(path: str | Path):
    """The config file as a module (a file path, like `--config` takes)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Config file {path} does not exist; check --config.")
    spec = importlib.util.spec_from_file_location(f"kd_jax_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for fn in ("get_config", "sweep"):
        if not callable(getattr(module, fn, None)):
            raise ValueError(f"{path} has no {fn}() function; a sweep needs get_config and sweep.")
    return module


def dependencies(module, arg: str) -> dict[str, str]:
    deps = module.dependencies(arg) if hasattr(module, "dependencies") else {}
    runlocal = bool(parse_arg(arg).get(RUNLOCAL))
    return {key: _with_runlocal(dep, runlocal) for key, dep in (deps or {}).items()}


def ordered_conditions(module, runlocal: bool = False, only: str | None = None) -> list[str]:
    """The sweep's condition args (runlocal added), filtered by `only` (a substring of the
    folder name), with dependencies added and placed before their dependents."""
    picked = [_with_runlocal(a, runlocal) for a in module.sweep()]
    if only:
        picked = [a for a in picked if only in condition_name(a)]
    order: list[str] = []
    names: set[str] = set()  # two spellings of one condition share its folder: run once
    visiting: set[str] = set()

    def visit(arg: str):
        if condition_name(arg) in names:
            return
        if arg in visiting:
            raise ValueError(f"condition {arg!r} depends on itself through dependencies()")
        visiting.add(arg)
        for dep in dependencies(module, arg).values():
            visit(dep)
        visiting.discard(arg)
        order.append(arg)
        names.add(condition_name(arg))

    for arg in picked:
        visit(arg)
    return order


def _cast(value: str, current):
    if isinstance(current, bool):
        return value.lower() in ("1", "true", "yes")
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, tuple | list):
        parsed = ast.literal_eval(value) if value[:1] in "([" else value.split(",")
        return tuple(parsed)
    return value


def apply_overrides(config, overrides: dict) -> None:
    """Sets dotted keys ("train.num_steps") from strings, cast to the existing type."""
    for key, value in overrides.items():
        *path, name = key.split(".")
        node = config
        for p in path:
            node = node[p]
        if name not in node:
            raise ValueError(f"--set {key}: no such config key; see configs/base.py")
        node[name] = _cast(value, node[name]) if isinstance(value, str) else value


def build_config(module, arg: str, workdir_of, overrides: dict | None = None):
    """The condition's config with its dependencies' workdirs and the overrides set."""
    config = module.get_config(arg)
    dep_keys = {k: str(workdir_of(dep)) for k, dep in dependencies(module, arg).items()}
    apply_overrides(config, dep_keys)
    apply_overrides(config, overrides or {})
    return config


# ---- running -----------------------------------------------------------------------------


def latest_step(workdir: str | Path) -> int | None:
    """The newest finished checkpoint step (Orbax names step folders by their number)."""
    ckpt = Path(workdir) / "checkpoints"
    steps = [int(p.name) for p in ckpt.iterdir() if p.name.isdigit()] if ckpt.is_dir() else []
    return max(steps, default=None)


def is_finished(workdir: str | Path, num_steps: int) -> bool:
    return latest_step(workdir) == num_steps


def _needs_eval(workdir: Path) -> bool:
    scores = workdir / "eval" / "scores.json"
    step = latest_step(workdir)
    if not scores.exists() or not (workdir / "run.json").exists() or step is None:
        return True
    return scores.stat().st_mtime < (workdir / "checkpoints" / str(step)).stat().st_mtime


def evaluation_kwargs(module, arg: str, config) -> dict:
    if hasattr(module, "evaluation"):
        return dict(module.evaluation(arg) or {})
    return {"teacher": "auto"} if config.method == "kd" else {}


def train_command(config_path, arg: str, workdir: Path, dep_workdirs: dict, overrides) -> str:
    parts = ["kd-jax", "train", "--config", f"{config_path}:{arg}", "--workdir", str(workdir)]
    parts += [f"--config.{k}={v}" for k, v in {**dep_workdirs, **overrides}.items()]
    return " ".join(shlex.quote(p) for p in parts)


def eval_command(workdir: Path, kwargs: dict) -> str:
    parts = ["kd-jax", "eval", "--workdir", str(workdir)]
    for key, value in kwargs.items():
        if key == "meta":
            parts += [f"--meta={k}={v}" for k, v in value.items()]
        elif value is not None:
            parts += [f"--{key.replace('_', '-')}", str(value)]
    return " ".join(shlex.quote(p) for p in parts)


def run_sweep(
    config_path: str | Path,
    workdir: str | Path,
    *,
    runlocal: bool = False,
    only: str | None = None,
    overrides: dict | None = None,
    print_commands: bool = False,
    print_eval_commands: bool = False,
    progress: bool = False,
) -> dict:
    """Runs (or prints) the sweep; returns {"done", "skipped", "failed", "report"}."""
    module = load_module(config_path)
    root = Path(workdir)
    overrides = dict(overrides or {})
    conds = ordered_conditions(module, runlocal, only)
    workdir_of = lambda a: root / condition_name(a)  # noqa: E731
    if print_commands or print_eval_commands:
        for arg in conds:
            deps = {k: workdir_of(d) for k, d in dependencies(module, arg).items()}
            if print_commands:
                print(train_command(config_path, arg, workdir_of(arg), deps, overrides))
        if print_eval_commands:
            for arg in conds:
                config = build_config(module, arg, workdir_of, overrides)
                print(eval_command(workdir_of(arg), evaluation_kwargs(module, arg, config)))
            print(
                f"kd-jax report {shlex.quote(str(root))} --out {shlex.quote(str(root / 'report'))}"
            )
        return {"conditions": conds}

    from kd_jax import train
    from kd_jax.evaluation.run_eval import evaluate_run

    result: dict = {"done": [], "skipped": [], "failed": {}, "report": None}
    for i, arg in enumerate(conds, 1):
        name, wd = condition_name(arg), workdir_of(arg)
        bad = [
            d for d in dependencies(module, arg).values() if condition_name(d) in result["failed"]
        ]
        if bad:
            result["failed"][name] = f"dependency {condition_name(bad[0])} failed"
            continue
        t0 = time.time()
        try:
            config = build_config(module, arg, workdir_of, overrides)
            config.train.progress_bar = progress and config.train.progress_bar
            if is_finished(wd, config.train.num_steps):
                result["skipped"].append(name)
            else:
                log.info("[%d/%d] training %s", i, len(conds), name)
                final = train.run(config, wd)
                if final.get("status") != "completed":
                    raise RuntimeError(f"training stopped: {final.get('status')}")
            kwargs = evaluation_kwargs(module, arg, config)
            if not (kwargs.get("tasks") or config.eval.tasks):
                log.warning("%s: no evaluation tasks (eval.tasks is empty); not evaluated.", name)
            elif _needs_eval(wd):
                log.info("[%d/%d] evaluating %s", i, len(conds), name)
                evaluate_run(wd, progress=progress, **kwargs)
            result["done"].append(name)
            log.info("[%d/%d] %s done in %.0f s", i, len(conds), name, time.time() - t0)
        except Exception as e:  # one broken condition must not stop the grid
            log.error("%s failed: %s\n%s", name, e, traceback.format_exc(limit=3))
            result["failed"][name] = f"{type(e).__name__}: {e}"
    evaluated = [
        str(workdir_of(a))
        for a in conds
        if condition_name(a) in result["done"] and not _needs_eval(workdir_of(a))
    ]
    if evaluated:
        from kd_jax.report import write_report

        result["report"] = write_report(evaluated, str(root / "report"))
    return result


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"kd-jax: error: --set {item!r} is not KEY=VALUE.")
        out[key.removeprefix("config.")] = value
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="kd-jax sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="a study config file with sweep()")
    p.add_argument("--workdir", required=True)
    p.add_argument("--runlocal", action="store_true", help="the tiny CPU variant of each")
    p.add_argument("--only", default=None, help="conditions whose folder name contains this")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config value for every condition, e.g. train.num_steps=10")  # fmt: skip
    p.add_argument("--print-commands", action="store_true")
    p.add_argument("--print-eval-commands", action="store_true")
    p.add_argument("--progress", action="store_true", help="progress bars")
    args = p.parse_args(argv)
    try:
        result = run_sweep(
            args.config.split(":")[0], args.workdir, runlocal=args.runlocal, only=args.only,
            overrides=_overrides(args.set), print_commands=args.print_commands,
            print_eval_commands=args.print_eval_commands, progress=args.progress,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"kd-jax: error: {e}", file=sys.stderr)
        return 2
    if "done" not in result:
        return 0
    print(f"done {len(result['done'])}, skipped training {len(result['skipped'])}, "
          f"failed {len(result['failed'])}; report: {result['report']}")  # fmt: skip
    for name, why in result["failed"].items():
        print(f"  failed: {name}: {why}", file=sys.stderr)
    return 1 if result["failed"] else 0
