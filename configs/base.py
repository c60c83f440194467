"""Every default of kd_jax in one place. Other configs start from `get_config()` here.

    kd-jax train --config configs/base.py --config.student.preset=tiny-student ...

Nothing in kd_jax reads a setting with a fallback default: a key missing here is a bug.
"""

from ml_collections import ConfigDict

from kd_jax.sharding import DEFAULT_RULES


def name_and_runlocal(arg: str, names, config_file: str) -> tuple[str, bool]:
    """A config argument "<name>" or "<name>,runlocal" -> (name, runlocal), else one line
    naming the choices."""
    name, *flags = arg.split(",")
    if name not in names or set(flags) - {"runlocal"}:
        raise ValueError(
            f"{config_file} takes one of {', '.join(names)} (optionally ',runlocal'), not {arg!r}."
        )
    return name, "runlocal" in flags


def tiny_on_cpu(c: ConfigDict) -> ConfigDict:
    """The built-in tokenizer and the data, schedule and eval sizes the built-in tiny models
    train well with on a few CPU cores (configs/tiny_compare.py, quickstart.py, pretrain.py)."""
    c.data.tokenizer = "builtin:tokenizer"
    c.data.max_length = 96
    c.data.batch_size = 32
    c.mesh.data = -1
    c.optim.lr = 2e-3  # tiny models need a much larger step than the studies' 5e-6
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 30
    c.optim.weight_decay = 0.01
    c.train.eval_batches = 4
    c.eval.num_examples = 200
    return c


def model_config() -> ConfigDict:
    """Where a model comes from: an HF folder, a kd_jax workdir, or a named preset."""
    return ConfigDict(
        dict(
            hf_path="",  # local HF folder (config.json + safetensors)
            workdir="",  # a kd_jax run whose latest (or best) checkpoint holds the weights
            checkpoint="latest",  # "latest" | "best", for `workdir`
            preset="",  # a name from kd_jax.models.presets (random init)
            dtype="float32",  # compute dtype
            param_dtype="float32",  # storage dtype (master weights for the student)
            remat_policy="none",
            # "auto" (splash on TPU, cudnn on GPU, xla on CPU) | "xla" | "splash" | "cudnn"
            attention="auto",
            lora=ConfigDict(
                dict(
                    enabled=False,
                    rank=8,
                    alpha=16.0,
                    dropout=0.05,
                    targets=("q", "k", "v", "up", "down"),
                    param_dtype="float32",  # the adapters' master dtype (the base: param_dtype)
                )
            ),
        )
    )


def get_config() -> ConfigDict:
    c = ConfigDict()
    c.seed = 0
    # "sft": cross-entropy only; "kd": a frozen teacher's distribution (see `kd`).
    c.method = "sft"

    c.student = model_config()
    c.teacher = model_config()
    c.teacher.lora.enabled = False

    # Mirrors kd_jax.data.DataConfig field for field.
    c.data = ConfigDict(
        dict(
            train="",  # JSONL file/folder/glob, Parquet, or a prepared TFDS folder
            validation="",  # separate validation files; else validation_size held out
            format="auto",  # "chat" | "alpaca" | "auto"
            tokenizer="",  # local HF tokenizer folder
            max_length=256,
            packing=True,
            num_packing_bins=0,
            train_on_inputs=False,  # Study B trains on prompt tokens too
            alpaca_template="alpaca",  # "alpaca" | "kd_generalization" (Study B's strings)
            num_examples=0,  # 0 = all; nested, seed-determined subsets otherwise
            validation_size=0,
            subset_seed=0,
            seed=0,  # shuffle order
            batch_size=8,  # global rows per optimizer step
            skip_bad_lines=False,
            num_threads=0,  # tokenizing holds the GIL: reader threads only add overhead
            prefetch_batches=2,  # batches built ahead in a background thread
            num_workers=0,  # grain worker processes (resume with the same number)
            cache_examples=100_000,  # keep tokenized examples of subsets up to this size
        )
    )

    # Mirrors kd_jax.losses.KDLossConfig (divergence = its `kind`), plus chunk_size.
    c.kd = ConfigDict(
        dict(
            # fkl | rkl | gjsd | skew_fkl | skew_rkl | tvd | fkl_studyb | rkl_studyb
            divergence="fkl",
            alpha=1.0,  # loss = alpha * KD + (1 - alpha) * CE
            temperature=1.0,
            scale_by_tau_sq=True,
            beta=0.5,  # gjsd mixture weight (TRL/GKD convention)
            skew=0.1,  # skew_fkl / skew_rkl mixture weight
            reduction="token",  # "token" (global token mean) | "sequence" (Study B)
            teacher_top_k=0,  # 0 = the full teacher distribution
            teacher_noise_std=0.0,  # Study B's logit-noise ablation
            vocab_size=0,  # >0: cut both vocabularies to this size (padding rows)
            chunk_size=256,  # tokens per loss chunk: <= 256 keeps it under 10% of dense memory
            # A `kd-jax cache-teacher` folder: read the teacher's top-k from it instead of
            # running the teacher (needs data.packing=False; the teacher section still
            # names the teacher, to check that the cache belongs to it).
            teacher_cache="",
            # Distilling across tokenizers: "off" (one tokenizer, token-level KD), "aligned"
            # (text-aligned spans, shared-vocabulary KL, ULD for the rest) or "uld" (sorted
            # probabilities, no vocabulary mapping); needs data.packing=False and
            # teacher_tokenizer, the teacher's own HF tokenizer folder (e.g. builtin:tokenizer-b).
            cross_tokenizer="off",
            teacher_tokenizer="",
        )
    )

    # On-policy distillation (GKD): with probability lambda_ a batch's responses are
    # replaced by the current student's samples, which teacher and student then score.
    # Those batches are scored by the divergence alone (kd.alpha's CE share needs labels).
    c.gkd = ConfigDict(
        dict(
            lambda_=0.0,  # fraction of on-policy batches; 0 = off-policy only
            temperature=1.0,  # sampling temperature (0 = greedy)
            top_k=0,
            top_p=1.0,
            max_new_tokens=128,
        )
    )

    c.optim = ConfigDict(
        dict(
            name="adamw",
            lr=3e-4,
            schedule="linear",  # constant | linear | cosine
            warmup_steps=0,
            warmup_ratio=0.0,
            end_lr_factor=0.0,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.0,
            clip_norm=1.0,
            grad_accum=1,
        )
    )

    c.train = ConfigDict(
        dict(
            num_steps=100,
            log_every=10,
            eval_every=50,  # 0 = never
            eval_batches=4,
            checkpoint_every=50,
            keep_last=2,
            keep_best=True,  # also keep the checkpoint with the lowest eval loss
            max_bad_steps=10,  # consecutive non-finite steps before the run stops
            progress_bar=True,
            async_checkpointing=True,
            # Weights & Biases, beside TensorBoard: the same rows and the resolved config.
            # mode "offline" writes under WORKDIR/wandb for a later `wandb sync`.
            wandb=ConfigDict(
                dict(enabled=False, project="kd_jax", entity="", name="", mode="online")
            ),
        )
    )

    c.eval = ConfigDict(
        dict(
            tasks=("builtin",),
            max_new_tokens=64,
            temperature=0.0,  # 0 = greedy
            num_examples=200,
            batch_size=64,
            data_root="",  # the tasks' test files; "" = `kd-jax eval --data-root`
        )
    )

    c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.sharding_rules = tuple(DEFAULT_RULES)
    return c
