"""The Tunix half of benchmarks/vs_tunix.py: google-tunix's `DistillationTrainer` with its
`LogitStrategy`, run inside Tunix's own virtual environment.

It is not meant to be run by hand: vs_tunix.py writes a JSON config (shapes, loss and
optimizer settings, and the paths of the weights and tokens it shares with kd_jax), starts

    TUNIX_VENV/bin/python benchmarks/tunix_side.py CONFIG.json

and then sends one JSON command per line on stdin; each answer is one JSON line on stdout.
Everything the libraries print goes to stderr, so stdout carries only the answers.

What runs here, as Tunix's logit-distillation example sets it up: teacher and student are
Tunix's own `tunix.models.qwen2.model.Qwen2` (tied embeddings, q/k/v biases, float32),
loaded with the same weights as the kd_jax side; the forward functions return the logits of
all but the last position, labels are one-hot next tokens, `gen_model_input_fn` builds the
positions and the [B, T, T] causal mask from the padding mask, the optimizer is the optax
chain kd_jax builds (global-norm clipping, then AdamW), no mesh (one CPU device), and a step
is `trainer.train(batches)` (teacher forward in its own jit, then the jitted student step).
"""

from __future__ import annotations

import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    # Answers go to a private copy of stdout; fd 1 is pointed at stderr before the
    # libraries load, so whatever they print cannot corrupt the protocol.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import flax
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx
    from tunix.distillation import distillation_trainer, strategies
    from tunix.models.qwen2 import model as qwen2
    from tunix.sft import utils as sft_utils

    vocab = cfg["vocab"]

    def build(prefix: str, shape: dict, weights) -> qwen2.Qwen2:
        mc = qwen2.ModelConfig(
            num_layers=shape["layers"],
            vocab_size=vocab,
            embed_dim=shape["dim"],
            hidden_dim=shape["ffn"],
            num_heads=shape["heads"],
            head_dim=shape["head_dim"],
            num_kv_heads=shape["kv_heads"],
            rope_theta=shape["rope_theta"],
            norm_eps=shape["eps"],
            use_tied_embedding=True,
            dtype=jnp.float32,
            param_dtype=jnp.float32,
        )
        model = qwen2.Qwen2(mc, rngs=nnx.Rngs(0))

        def w(name):  # kd_jax stacks layers on a leading axis
            return np.asarray(weights[f"{prefix}/{name}"])

        model.embedder.input_embedding.value = jnp.asarray(w("embed/embedding"))
        model.final_norm.w.value = jnp.asarray(w("final_norm/scale"))
        for i, layer in enumerate(model.layers):
            attn = layer.attn
            layer.input_layernorm.w.value = jnp.asarray(w("blocks/attn_norm/scale")[i])
            layer.post_attention_layernorm.w.value = jnp.asarray(w("blocks/mlp_norm/scale")[i])
            attn.q_proj.w.value = jnp.asarray(w("blocks/q/kernel")[i])  # [D, N, H] both
            attn.k_proj.w.value = jnp.asarray(w("blocks/k/kernel")[i])
            attn.v_proj.w.value = jnp.asarray(w("blocks/v/kernel")[i])
            attn.o_proj.w.value = jnp.asarray(w("blocks/o/kernel")[i])  # [N, H, D] both
            # Tunix adds the biases on the flattened [N * H] projection.
            attn.q_bias.value = jnp.asarray(w("blocks/q/bias")[i].reshape(-1))
            attn.k_bias.value = jnp.asarray(w("blocks/k/bias")[i].reshape(-1))
            attn.v_bias.value = jnp.asarray(w("blocks/v/bias")[i].reshape(-1))
            layer.mlp.gate_proj.kernel.value = jnp.asarray(w("blocks/gate/kernel")[i])
            layer.mlp.up_proj.kernel.value = jnp.asarray(w("blocks/up/kernel")[i])
            layer.mlp.down_proj.kernel.value = jnp.asarray(w("blocks/down/kernel")[i])
        return model

    weights = np.load(cfg["weights"])
    student = build("student", cfg["student"], weights)
    teacher = build("teacher", cfg["teacher"], weights)
    teacher.eval()
    student.train()

    def model_forward_fn(model, input_tokens, input_mask, positions, attention_mask):
        del input_mask
        logits, _ = model(input_tokens, positions, None, attention_mask)
        return logits[:, :-1, :]  # the last position has no target

    def labels_fn(input_tokens, input_mask, **kwargs):
        del kwargs
        labels = jax.nn.one_hot(input_tokens[:, 1:], vocab)
        return labels * input_mask[:, 1:].astype(labels.dtype)[..., None]

    def gen_model_input_fn(x):
        pad_mask = x.input_mask.astype(jnp.bool_)
        return {
            "input_tokens": x.input_tokens,
            "input_mask": x.input_mask,
            "positions": sft_utils.build_positions_from_mask(pad_mask),
            "attention_mask": sft_utils.make_causal_attn_mask(pad_mask),
        }

    strategy = strategies.LogitStrategy(
        student_forward_fn=model_forward_fn,
        teacher_forward_fn=model_forward_fn,
        labels_fn=labels_fn,
        temperature=cfg["temperature"],
        alpha=cfg["alpha"],
    )
    o = cfg["optim"]
    adamw = optax.adamw(
        o["lr"], b1=o["b1"], b2=o["b2"], eps=o["eps"], weight_decay=o["weight_decay"]
    )
    optimizer = optax.chain(optax.clip_by_global_norm(o["clip_norm"]), adamw)
    training_config = distillation_trainer.TrainingConfig(eval_every_n_steps=10**9, max_steps=None)
    trainer = distillation_trainer.DistillationTrainer(
        student, teacher, strategy, optimizer, training_config
    ).with_gen_model_input_fn(gen_model_input_fn)
    # Driven one sample of steps at a time, as Tunix's RL loops drive it: `train` then
    # runs every batch it is given and does not close the trainer at the end.
    trainer.is_managed_externally = True

    tokens = np.load(cfg["tokens"])
    example = distillation_trainer.TrainingInput(
        input_tokens=jnp.asarray(tokens), input_mask=jnp.ones(tokens.shape, jnp.int32)
    )

    def current_loss() -> float:
        inputs = gen_model_input_fn(example)
        teacher_out = strategy.get_teacher_outputs(teacher, inputs)
        loss, _ = strategy.get_train_loss(student, teacher_out, inputs)
        return float(loss)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        return time.perf_counter() - t0

    def steps(n: int) -> float:
        t0 = time.perf_counter()
        trainer.train([example] * n)  # returns once every step's loss is ready
        return time.perf_counter() - t0

    def parts() -> dict:
        """One step taken apart: the eager input preparation, the teacher's jitted
        forward, and the jitted student step (forward, loss, backward, update); then one
        whole step of `trainer.train`, to see what its loop adds to these."""
        train_step, _ = trainer.jit_train_and_eval_step(cache_nnx_graph=True)
        holder = {}
        t_inputs = timed(lambda: holder.setdefault("in", gen_model_input_fn(example)))
        inputs = holder["in"]
        t_teacher = timed(
            lambda: holder.setdefault("t", strategy.get_teacher_outputs(teacher, inputs))
        )
        prepared = distillation_trainer.TrainingInput(
            input_tokens=example.input_tokens,
            input_mask=example.input_mask,
            teacher_output=holder["t"],
        )
        t_step = timed(lambda: train_step(prepared))
        return {"inputs": t_inputs, "teacher": t_teacher, "step": t_step, "trainer": steps(1)}

    versions = {
        name: mod.__version__ for name, mod in (("jax", jax), ("flax", flax), ("optax", optax))
    }
    versions["google-tunix"] = version("google-tunix")
    answers.write(
        json.dumps({"ready": True, "versions": versions, "devices": str(jax.devices())}) + "\n"
    )
    for line in sys.stdin:
        cmd = json.loads(line)
        name = cmd["cmd"]
        if name == "loss":
            reply = {"loss": current_loss()}
        elif name == "steps":
            reply = {"seconds": steps(cmd["n"])}
        elif name == "parts":
            reply = parts()
        elif name == "quit":
            break
        else:
            reply = {"error": f"unknown command {name!r}"}
        answers.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
