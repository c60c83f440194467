"""`kd-jax sweep`: train, evaluate and report every condition of a config file's sweep.

    kd-jax sweep --config configs/study_b_main.py --workdir runs/study_b [--runlocal]
        [--only SUBSTRING] [--config.key=value ...] [--print-commands] [--print-eval-commands]

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

import logging
import shlex
import time
import traceback
from pathlib import Path

from kd_jax import config_files
from kd_jax.config_files import apply_overrides, format_arg, parse_arg
from kd_jax.errors import UserError

log = logging.getLogger("kd_jax.sweep")
RUNLOCAL = "runlocal"


# ---- condition args ----------------------------------------------------------------------


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
    """The study config file as a module; it must define get_config and sweep."""
    module = config_files.load_module(path)
    if not callable(getattr(module, "sweep", None)):
        raise UserError(f"{path} has no sweep() function; a sweep needs get_config and sweep.")
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
            raise UserError(f"condition {arg!r} depends on itself through dependencies()")
        visiting.add(arg)
        for dep in dependencies(module, arg).values():
            visit(dep)
        visiting.discard(arg)
        order.append(arg)
        names.add(condition_name(arg))

    for arg in picked:
        visit(arg)
    return order


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


def _untimed(_label, fn, *args, **kwargs):
    return fn(*args, **kwargs)


def run_condition(
    label: str,
    workdir: Path,
    config,
    evaluation: dict,
    *,
    progress: bool = False,
    timer=_untimed,
    after_eval=None,
) -> bool:
    """Trains one condition unless its last checkpoint is there (an unfinished run
    resumes), then evaluates it unless its evaluation is newer than that checkpoint.
    Returns whether it trained. `timer(label, fn, *args)` wraps each stage (the miniature
    suite records wall times); `after_eval()` runs after a fresh evaluation."""
    from kd_jax import train
    from kd_jax.evaluation.run_eval import evaluate_run

    trained = not is_finished(workdir, config.train.num_steps)
    if trained:
        log.info("%s: training", label)
        final = timer(f"train {workdir.name}", train.run, config, workdir)
        if final.get("status") != "completed":
            raise RuntimeError(f"{workdir.name}: training stopped ({final.get('status')})")
    if not (evaluation.get("tasks") or config.eval.tasks):
        log.warning("%s: no evaluation tasks (eval.tasks is empty); not evaluated.", label)
    elif _needs_eval(workdir):
        log.info("%s: evaluating", label)
        timer(f"eval {workdir.name}", evaluate_run, workdir, progress=progress, **evaluation)
        if after_eval is not None:
            after_eval()
    return trained


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
            kwargs = evaluation_kwargs(module, arg, config)
            label = f"[{i}/{len(conds)}] {name}"
            if not run_condition(label, wd, config, kwargs, progress=progress):
                result["skipped"].append(name)
            result["done"].append(name)
            log.info("%s done in %.0f s", label, time.time() - t0)
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
