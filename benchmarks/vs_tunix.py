"""KD step throughput (tokens/s): kd_jax's jitted train step vs google-tunix's
`DistillationTrainer` with its `LogitStrategy`, on the same Qwen2 shapes. Target: >= 1.5x.

Both sides train the same student (random init, tied embeddings, q/k/v biases, float32)
from the same teacher, with the same weights (kd_jax initializes them and hands them to
Tunix), on the same batch of random tokens, with forward KL at the same temperature mixed
with cross-entropy by the same alpha (loss = alpha tau^2 KL(p_T || p_S) + (1 - alpha) CE,
averaged over tokens), and the same optimizer (global-norm clipping, then AdamW at a
constant lr). Each side's loss is printed before the first step and after the timed
steps: equal losses show that both compute the same thing.

- kd_jax: `kd_jax.step.train_step` in one `jax.jit` (state donated, as in training): the
  teacher and student forwards, the chunked loss (custom VJP, `--chunk-size` tokens per
  chunk), the backward pass and the update; one host sync per step, as `kd-jax train`
  reads `bad_steps` every step.
- Tunix (benchmarks/tunix_side.py, in its own virtual environment, installed on first use
  with `pip install google-tunix`): Tunix's own Qwen2 model class for both models, set up
  as Tunix's logit-distillation example does, and `trainer.train(batches)`: the eager
  input preparation, the teacher forward in its own jit, then the jitted student step
  (forward, full-vocabulary loss, backward, update), with Tunix's loop keeping up to two
  steps in flight.

A step forwards batch x length tokens through both models; Tunix's forward functions drop
the last position, so its loss covers length - 1 targets per row, and kd_jax's batch masks
the last target to match. After warm-up (compilation), the two sides are timed in
alternation, `--steps` steps per sample, so that load from other processes falls on both
alike; the reported time per step is the median over `--repeats` samples, and the ratio
the median of the samples' paired ratios. Then each side's step is taken apart (medians,
also alternating) to show where the difference lies:
both sides' teacher forwards cost about the same (Tunix passes the teacher's [B, T-1, V]
float32 logits from its own jit into the student's); the gap is in the student step, where
Tunix's `LogitStrategy` materializes full-vocabulary float32 logits, log-softmax and softmax
at tau, one-hot labels [B, T-1, V], the student's CE and the teacher's CE (a metric), and
autodiff keeps and walks back through them, while kd_jax's loss goes over chunks of
`--chunk-size` tokens and forms its logit gradient in the forward scan.

    python benchmarks/vs_tunix.py [--batch 8 --length 128 --vocab 8192]
        [--student-dim 128 --student-layers 2 --teacher-dim 256 --teacher-layers 4]
        [--tunix-venv ~/.cache/kd_jax/tunix-venv]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from configs import base
from kd_jax import sharding as shd
from kd_jax import step_builder as build
from kd_jax.models import create_model
from kd_jax.models.model_config import ModelConfig
from kd_jax.models.parts import ModelParts

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = Path.home() / ".cache" / "kd_jax" / "tunix-venv"


def ensure_tunix_venv(venv: Path, spec: str, reinstall: bool) -> Path:
    """The venv's python, creating the venv and installing `spec` on first use. A marker
    file records what was installed, so a changed spec installs again."""
    python = venv / "bin" / "python"
    marker = venv / ".kd_jax_installed"
    if not reinstall and python.exists() and marker.exists() and marker.read_text() == spec:
        return python
    print(f"installing {spec} into {venv} (once; a few minutes) ...", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # Tunix pins versions (e.g. safetensors < 0.8) that kd_jax's environment does not
    # share, hence a venv of its own rather than an install beside kd_jax.
    done = subprocess.run(
        [str(python), "-m", "pip", "install", spec], capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(
            f"pip install {spec} into {venv} failed (exit {done.returncode}):\n"
            + (done.stdout + done.stderr)[-4000:]
        )
    marker.write_text(spec)
    return python


class TunixSide:
    """benchmarks/tunix_side.py in Tunix's venv, answering one JSON line per command."""

    def __init__(self, python: Path, config_path: Path, log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        # The kd_jax venv's variables would point the child at the wrong site-packages.
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        self.proc = subprocess.Popen(
            [str(python), str(HERE / "tunix_side.py"), str(config_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        self.hello = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log_path.read_text().splitlines()[-40:]
            raise RuntimeError(
                f"the Tunix side exited (code {self.proc.returncode}); the end of its log:\n"
                + "\n".join(tail)
            )
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the Tunix side: {reply['error']}")
        return reply

    def ask(self, cmd: str, **kw) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def qwen2_shape(args, dim: int, layers: int) -> dict:
    return dict(
        dim=dim,
        layers=layers,
        heads=dim // args.head_dim,
        kv_heads=args.kv_heads,
        head_dim=args.head_dim,
        ffn=args.ffn_mult * dim,
        rope_theta=1_000_000.0,
        eps=1e-6,
    )


def build_parts(args, shape: dict, mesh, seed: int) -> ModelParts:
    cfg = ModelConfig(
        vocab_size=args.vocab,
        hidden_size=shape["dim"],
        intermediate_size=shape["ffn"],
        num_layers=shape["layers"],
        num_heads=shape["heads"],
        num_kv_heads=shape["kv_heads"],
        head_dim=shape["head_dim"],
        family="qwen2",
        rope_theta=shape["rope_theta"],
        rms_norm_eps=shape["eps"],
        tie_word_embeddings=True,
        qkv_bias=True,
        max_position_embeddings=max(2048, args.length),
    )
    model = create_model(cfg, seed=seed, mesh=mesh, rules=shd.DEFAULT_RULES)
    filters = (nnx.Param, ...)
    graphdef, trainable, frozen = nnx.split(model, *filters)
    return ModelParts(
        graphdef, nnx.to_pure_dict(trainable), nnx.to_pure_dict(frozen), filters, model.cfg
    )


def flat(prefix: str, tree: dict) -> dict:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out["/".join([prefix, *(str(k.key) for k in path)])] = np.asarray(leaf)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--student-dim", type=int, default=128)
    p.add_argument("--student-layers", type=int, default=2)
    p.add_argument("--teacher-dim", type=int, default=256)
    p.add_argument("--teacher-layers", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn-mult", type=int, default=4, help="MLP width / model width")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the KD term vs CE")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument(
        "--chunk-size",
        type=int,
        default=base.get_config().kd.chunk_size,
        help="kd_jax loss chunk (tokens); default: configs/base.py's",
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side (>= 2)")
    p.add_argument("--steps", type=int, default=5, help="steps per timed sample")
    p.add_argument("--repeats", type=int, default=15, help="timed samples per side")
    p.add_argument("--tunix-venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--tunix-spec", default="google-tunix", help="what pip installs there")
    p.add_argument("--reinstall", action="store_true", help="pip install into the venv again")
    args = p.parse_args()

    python = ensure_tunix_venv(args.tunix_venv.expanduser(), args.tunix_spec, args.reinstall)

    # One device on both sides: Tunix runs without a mesh here.
    mesh = shd.make_mesh({"data": 1}, jax.devices()[:1])
    s_shape = qwen2_shape(args, args.student_dim, args.student_layers)
    t_shape = qwen2_shape(args, args.teacher_dim, args.teacher_layers)
    student = build_parts(args, s_shape, mesh, seed=0)
    teacher = build_parts(args, t_shape, mesh, seed=1)

    config = base.get_config()
    config.method = "kd"
    config.optim.lr, config.optim.schedule = args.lr, "constant"
    config.train.num_steps = 1
    config.kd.update(
        divergence="fkl", alpha=args.alpha, temperature=args.temperature, chunk_size=args.chunk_size
    )
    config.data.batch_size, config.data.max_length = args.batch, args.length
    optim = config.optim
    args.clip_norm = optim.clip_norm
    rules = build.rules_of(config)
    program = build.build_program(
        config,
        mesh=mesh,
        rules=rules,
        student=student,
        teacher=teacher,
        batch_shardings=build.batch_shardings(config, mesh, rules),
    )
    kd_step, eval_loss, context = program.train_step, program.eval_step, program.context

    tokens = np.random.default_rng(0).integers(0, args.vocab, (args.batch, args.length))
    tokens = tokens.astype(np.int32)
    b, t = tokens.shape
    # Tunix predicts tokens[:, 1:] from all positions but the last; the same targets here,
    # with the last position's (which has no next token) masked out.
    targets = np.concatenate([tokens[:, 1:], np.zeros((b, 1), np.int32)], axis=1)
    mask = np.ones((b, t), np.float32)
    mask[:, -1] = 0.0
    batch = {
        "inputs": jnp.asarray(tokens),
        "targets": jnp.asarray(targets),
        "loss_mask": jnp.asarray(mask),
        "positions": jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t)),
        "segment_ids": jnp.ones((b, t), jnp.int32),
    }
    state = program.init_state(jax.tree.map(jnp.copy, student.trainable))
    rng = jax.random.key(0)

    def kd_loss() -> float:
        terms = eval_loss(state["params"], batch, context)
        return float(terms["loss_sum"] / terms["denominator"])

    def kd_steps(n: int) -> float:
        nonlocal state
        t0 = time.perf_counter()
        for _ in range(n):
            state, metrics = kd_step(state, batch, rng, context)
            int(metrics["bad_steps"])  # the per-step host read of `kd-jax train`
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="kd_jax_vs_tunix_") as tmp:
        tmp = Path(tmp)
        np.savez(
            tmp / "weights.npz",
            **flat("student", student.trainable),
            **flat("teacher", teacher.trainable),
        )
        np.save(tmp / "tokens.npy", tokens)
        config = dict(
            vocab=args.vocab,
            student=s_shape,
            teacher=t_shape,
            temperature=args.temperature,
            alpha=args.alpha,
            optim=dict(
                lr=optim.lr,
                b1=optim.b1,
                b2=optim.b2,
                eps=optim.eps,
                weight_decay=optim.weight_decay,
                clip_norm=optim.clip_norm,
            ),
            weights=str(tmp / "weights.npz"),
            tokens=str(tmp / "tokens.npy"),
        )
        (tmp / "config.json").write_text(json.dumps(config))
        tunix = TunixSide(python, tmp / "config.json", tmp / "tunix_side.log")
        try:
            report = run(args, tunix, kd_loss, kd_steps, teacher, batch)
        finally:
            tunix.close()
    print_report(args, tunix.hello, report, s_shape, t_shape)


def run(args, tunix: TunixSide, kd_loss, kd_steps, teacher: ModelParts, batch) -> dict:
    r = {"loss0": (kd_loss(), tunix.ask("loss")["loss"]), "load": [os.getloadavg()[0]]}
    # Two steps at least: the first compiles for the initial state's shardings, the second
    # again for those of the state the jitted step returns.
    warmup = max(args.warmup, 2)
    kd_steps(warmup)
    tunix.ask("steps", n=warmup)
    times = {"kd_jax": [], "tunix": []}
    for i in range(args.repeats):
        # Alternate which side goes first, so neither always follows the other.
        order = ("kd_jax", "tunix") if i % 2 == 0 else ("tunix", "kd_jax")
        for side in order:
            if side == "kd_jax":
                times[side].append(kd_steps(args.steps) / args.steps)
            else:
                times[side].append(tunix.ask("steps", n=args.steps)["seconds"] / args.steps)
        r["load"].append(os.getloadavg()[0])
    r["times"] = {k: float(np.median(v)) for k, v in times.items()}
    # The ratio is the median of the paired samples' ratios: drift in the machine's speed
    # over the run cancels within each pair.
    r["ratio"] = float(np.median(np.asarray(times["tunix"]) / np.asarray(times["kd_jax"])))
    r["num_steps"] = warmup + args.repeats * args.steps
    r["loss1"] = (kd_loss(), tunix.ask("loss")["loss"])

    # Taken apart (these Tunix steps train its student further, so they come after the
    # loss comparison).
    @jax.jit
    def teacher_logits(params, frozen, batch):
        model = teacher.merge(params, frozen)
        h = model.hidden(batch["inputs"], batch["positions"], batch["segment_ids"])
        return model.logits(h)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        return time.perf_counter() - t0

    teacher_call = lambda: teacher_logits(teacher.trainable, teacher.frozen, batch)
    timed(teacher_call)
    tunix.ask("parts")
    parts = {
        "kd_teacher": [],
        "kd_step": [],
        "inputs": [],
        "teacher": [],
        "step": [],
        "trainer": [],
    }
    for _ in range(args.repeats):
        parts["kd_teacher"].append(timed(teacher_call))
        parts["kd_step"].append(kd_steps(1))
        for k, v in tunix.ask("parts").items():
            parts[k].append(v)
    r["parts"] = {k: float(np.median(v)) for k, v in parts.items()}
    r["clip"] = args.clip_norm
    r["load"].append(os.getloadavg()[0])
    return r


def print_report(args, hello: dict, r: dict, s_shape: dict, t_shape: dict) -> None:
    def desc(s):
        return (
            f"d={s['dim']} x {s['layers']} layers, {s['heads']} heads / {s['kv_heads']} "
            f"kv of {s['head_dim']}, MLP {s['ffn']}"
        )

    tokens = args.batch * args.length
    ours = {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__}
    print(
        f"Qwen2 shapes, float32, vocab {args.vocab}, tied embeddings, q/k/v biases; batch "
        f"{args.batch} x {args.length} tokens"
    )
    print(f"  student {desc(s_shape)}")
    print(f"  teacher {desc(t_shape)}")
    print(
        f"loss: alpha={args.alpha} * tau^2 * KL(p_T || p_S) at tau={args.temperature} + "
        f"(1 - alpha) * CE; AdamW lr {args.lr} after clipping at {r['clip']}; kd_jax "
        f"chunk {args.chunk_size} tokens"
    )
    print(f"kd_jax side: {ours}, devices {jax.devices()}")
    print(f"Tunix side:  {hello['versions']}, devices {hello['devices']}")
    load = ", ".join(f"{x:.1f}" for x in r["load"])
    print(f"load average (1 min) through the run: {load} on {os.cpu_count()} CPUs")
    (a0, b0), (a1, b1) = r["loss0"], r["loss1"]
    print(f"loss before step 1:    kd_jax {a0:.6f}   Tunix {b0:.6f}   (diff {a0 - b0:+.1e})")
    print(
        f"loss after {r['num_steps']:3d} steps:  kd_jax {a1:.6f}   Tunix {b1:.6f}   "
        f"(diff {a1 - b1:+.1e})"
    )
    t = r["times"]
    print(f"median of {args.repeats} samples x {args.steps} steps, sides alternating:")
    for name, label in (("kd_jax", "kd_jax train_step"), ("tunix", "Tunix trainer.train")):
        print(f"  {label:20s} {t[name] * 1e3:8.1f} ms/step  {tokens / t[name]:10,.0f} tokens/s")
    print(
        f"ratio kd_jax / Tunix (tokens/s) = {r['ratio']:.2f}x  (target >= 1.5x; median of "
        "the paired samples' ratios)"
    )
    q = {k: v * 1e3 for k, v in r["parts"].items()}
    loop = q["trainer"] - q["inputs"] - q["teacher"] - q["step"]
    print("where the time goes (single steps taken apart, medians, sides alternating; ms):")
    print(
        f"  teacher forward        kd_jax {q['kd_teacher']:7.1f}   Tunix {q['teacher']:7.1f}   "
        "(kd_jax: timed alone, runs inside its step; Tunix: its own jit)"
    )
    print(
        f"  student fwd+loss+bwd   kd_jax {q['kd_step'] - q['kd_teacher']:7.1f}   Tunix "
        f"{q['step']:7.1f}   (kd_jax: step {q['kd_step']:.1f} minus teacher; Tunix: its "
        "jitted step; both with the update)"
    )
    print(
        f"  outside jitted code    Tunix eager inputs {q['inputs']:.1f}, the rest of a "
        f"one-step trainer.train {loop:+.1f} (step {q['trainer']:.1f})"
    )
    print(
        f"  whole step             kd_jax {q['kd_step']:7.1f}   Tunix {q['trainer']:7.1f}   "
        f"ratio {q['trainer'] / q['kd_step']:.2f}x (one step per sample: no overlap of "
        "steps in Tunix's loop)"
    )


if __name__ == "__main__":
    main()
