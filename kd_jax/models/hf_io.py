"""Hugging Face checkpoints in and out: `load(path) -> Decoder`, `save(model, path)`.

`load` reads `config.json` and safetensors (one file or a sharded index) from a local
folder and builds each parameter with `jax.make_array_from_callback`: every device reads
only its own slice of the memory-mapped file, so no host ever holds the whole model.
`save` writes a folder that `transformers.AutoModelForCausalLM.from_pretrained` loads,
with LoRA adapters merged into their kernels.

HF stores a linear layer as weight [out, in]; kd_jax keeps kernels as [*in, *out] with
heads split out (q: [embed, heads, head_dim]); `_to_ours` / `_to_hf` convert one layer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, SingleDeviceSharding

from kd_jax import sharding as shd
from kd_jax.errors import UserError
from kd_jax.models.decoder import Decoder
from kd_jax.models.init import abstract_model
from kd_jax.models.model_config import LoraConfig, ModelConfig
from kd_jax.models.safetensors_io import SafetensorsFile, save_file


class CheckpointError(UserError):
    """An HF checkpoint folder kd_jax cannot load, with the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class _Entry:
    path: tuple[str, ...]  # into the NNX state
    hf_name: str  # with "{i}" for per-layer tensors
    kind: str  # "dense" | "bias" | "same"
    num_in: int = 1  # leading input dims of a dense kernel (2 for the output projection)


def _table(cfg: ModelConfig) -> list[_Entry]:
    layer = "model.layers.{i}."
    e = [_Entry(("embed", "embedding"), "model.embed_tokens.weight", "same")]
    e += [_Entry(("final_norm", "scale"), "model.norm.weight", "same")]
    if not cfg.tie_word_embeddings:
        e += [_Entry(("lm_head", "kernel"), "lm_head.weight", "dense")]
    for ours, theirs in (
        ("q", "self_attn.q_proj"),
        ("k", "self_attn.k_proj"),
        ("v", "self_attn.v_proj"),
    ):
        e += [_Entry(("blocks", ours, "kernel"), layer + theirs + ".weight", "dense")]
        if cfg.qkv_bias:
            e += [_Entry(("blocks", ours, "bias"), layer + theirs + ".bias", "bias")]
    e += [_Entry(("blocks", "o", "kernel"), layer + "self_attn.o_proj.weight", "dense", 2)]
    for ours in ("gate", "up", "down"):
        e += [_Entry(("blocks", ours, "kernel"), layer + f"mlp.{ours}_proj.weight", "dense")]
    e += [_Entry(("blocks", "attn_norm", "scale"), layer + "input_layernorm.weight", "same")]
    e += [
        _Entry(("blocks", "mlp_norm", "scale"), layer + "post_attention_layernorm.weight", "same")
    ]
    return e


def _hf_shape(entry: _Entry, ours: tuple[int, ...]) -> tuple[int, ...]:
    if entry.kind == "dense":
        return (math.prod(ours[entry.num_in :]), math.prod(ours[: entry.num_in]))
    if entry.kind == "bias":
        return (math.prod(ours),)
    return ours


def _to_ours(entry: _Entry, hf: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
    """A view of an HF tensor in kd_jax's layout (no copy for memory-mapped input)."""
    if entry.kind == "dense":
        return hf.T.reshape(ours)
    return hf.reshape(ours)


def _to_hf(entry: _Entry, ours: np.ndarray) -> np.ndarray:
    if entry.kind == "dense":
        return ours.reshape(math.prod(ours.shape[: entry.num_in]), -1).T
    return ours.reshape(-1) if entry.kind == "bias" else ours


# --- load --------------------------------------------------------------------------------


def _weight_files(folder: Path) -> dict[str, Path]:
    """tensor name -> safetensors file, from an index or a single model.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index)["weight_map"]
        missing = sorted({f for f in weight_map.values() if not (folder / f).exists()})
        if missing:
            raise CheckpointError(
                f"{index} lists shard(s) {missing} that are not in {folder}; copy the whole "
                "checkpoint folder."
            )
        return {name: folder / f for name, f in weight_map.items()}
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return {name: f for f in files for name in SafetensorsFile(f).keys()}
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
    if pickles:
        raise CheckpointError(
            f"{folder} holds only pickle checkpoints ({', '.join(pickles)}), which kd_jax does not "
            "load because unpickling can run code; convert them with "
            "model.save_pretrained(out_dir, safe_serialization=True)."
        )
    raise CheckpointError(f"{folder} has no *.safetensors weights; is it an HF model folder?")


def _config_json(folder: Path) -> dict:
    if not folder.is_dir():
        raise CheckpointError(f"Model folder {folder} does not exist; check the path.")
    cfg_file = folder / "config.json"
    if not cfg_file.exists():
        raise CheckpointError(
            f"{folder} has no config.json; point to an HF model folder (as written by "
            "save_pretrained)."
        )
    cfg = _read_json(cfg_file)
    quant = cfg.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "unknown") if isinstance(quant, dict) else quant
        raise CheckpointError(
            f"{cfg_file} declares quantized weights (quantization_config, {method}); kd_jax "
            "reads float weights only: dequantize and save in bf16/f32 first "
            "(transformers: from_pretrained(..., dtype=torch.bfloat16).dequantize()."
            "save_pretrained(out))."
        )
    return cfg


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" (line {e.lineno}: {e.msg})" if isinstance(e, json.JSONDecodeError) else ""
        raise CheckpointError(
            f"{path} is not valid JSON{where}; restore it from the original checkpoint."
        ) from None


def read_config(path: str | Path, **overrides) -> ModelConfig:
    """The ModelConfig of an HF folder (its config.json), with field overrides."""
    return ModelConfig.from_hf(_config_json(Path(path)), **overrides)


def load(
    path: str | Path,
    *,
    dtype: str | None = None,
    param_dtype: str | None = None,
    mesh: Mesh | None = None,
    rules=None,
    lora: LoraConfig | None = None,
    remat_policy: str | None = None,
    seed: int = 0,
    attention: str | None = None,
) -> Decoder:
    """Loads an HF Llama/Qwen2 folder into a Decoder, sharded on `mesh` if given.

    `dtype` is the compute dtype and `param_dtype` the storage dtype (default: the
    checkpoint's `torch_dtype`, else float32). With `lora`, fresh adapters are added.
    """
    folder = Path(path)
    overrides = dict(dtype=dtype, remat_policy=remat_policy, attention=attention)
    overrides = {k: v for k, v in overrides.items() if v}
    hf_json = _config_json(folder)
    stored = hf_json.get("torch_dtype") or hf_json.get("dtype")
    storage = param_dtype or (stored if stored in ("bfloat16", "float16") else "float32")
    cfg = ModelConfig.from_hf(hf_json, param_dtype=storage, lora=lora, **overrides)
    files = _weight_files(folder)
    graphdef, state = nnx.split(abstract_model(cfg))
    if mesh is not None:
        shd.require_rules(rules)
        shardings = shd.state_shardings(state, mesh, rules)
    else:
        single = SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree.map(
            lambda v: v.replace(single), state, is_leaf=lambda x: isinstance(x, nnx.Variable)
        )
    flat = dict(nnx.to_flat_state(state))
    flat_shardings = dict(nnx.to_flat_state(shardings))
    opened: dict[Path, SafetensorsFile] = {}

    def tensor(name: str, expected: tuple[int, ...]) -> np.ndarray:
        if name not in files:
            raise CheckpointError(
                f"{folder} has no tensor {name!r}; the checkpoint is incomplete or not a "
                f"{cfg.family} model of this config.json."
            )
        f = files[name]
        st = opened.setdefault(f, SafetensorsFile(f))
        if st.shape(name) != expected:
            raise CheckpointError(
                f"{f.name}: tensor {name!r} has shape {list(st.shape(name))} but config.json "
                f"implies {list(expected)}; the weights and config.json do not match."
            )
        return st.array(name)

    for entry in _table(cfg):
        var = flat[entry.path]
        shape, dt = var.get_value().shape, var.get_value().dtype
        stacked = entry.hf_name.count("{i}") == 1
        per_layer = shape[1:] if stacked else shape
        hf_shape = _hf_shape(entry, per_layer)
        if stacked:
            views = [
                _to_ours(entry, tensor(entry.hf_name.format(i=i), hf_shape), per_layer)
                for i in range(cfg.num_layers)
            ]

            def read(index, views=views, dt=dt):
                layers = range(len(views))[index[0]]
                return np.stack([np.asarray(views[i][index[1:]], dtype=dt) for i in layers])
        else:
            view = _to_ours(entry, tensor(entry.hf_name, hf_shape), per_layer)

            def read(index, view=view, dt=dt):
                return np.asarray(view[index], dtype=dt)

        sharding = flat_shardings[entry.path].get_value()
        flat[entry.path] = var.replace(jax.make_array_from_callback(shape, sharding, read))

    lora_paths = [p for p, v in flat.items() if isinstance(v, nnx.LoRAParam)]
    if lora_paths:
        lora_state = _init_lora(cfg, seed, shardings)
        for p, v in nnx.to_flat_state(lora_state):
            flat[p] = v
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def _init_lora(cfg: ModelConfig, seed: int, shardings) -> nnx.State:
    """Fresh LoRA adapters only; XLA drops the unused base-weight initialization."""
    lora_shardings = nnx.filter_state(shardings, nnx.LoRAParam)

    @jax.jit
    def init():
        state = nnx.state(Decoder(cfg, rngs=nnx.Rngs(seed)), nnx.LoRAParam)
        return jax.lax.with_sharding_constraint(state, lora_shardings)

    return init()


# --- save --------------------------------------------------------------------------------


def _host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))


def merged_state(model: Decoder) -> dict[tuple[str, ...], jax.Array]:
    """Flat {path: array} of the base parameters with every LoRA adapter folded in."""
    flat = {p: v.get_value() for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    for path, module in nnx.iter_graph(model):
        if getattr(module, "lora_a", None) is not None:
            flat[tuple(path) + ("kernel",)] = module.merged_kernel()
    return {p: a for p, a in flat.items() if p[-1] not in ("lora_a", "lora_b")}


def save(
    model: Decoder,
    path: str | Path,
    *,
    dtype: str | None = None,
    tokenizer_dir: str | Path | None = None,
    max_shard_bytes: int = 2 << 30,
) -> Path:
    """Writes `model` as an HF folder (config.json + safetensors), LoRA merged."""
    cfg = model.cfg
    dtype = dtype or cfg.param_dtype
    out = Path(path)
    flat = merged_state(model)
    tensors: dict[str, np.ndarray] = {}
    for entry in _table(cfg):
        arr = flat[entry.path]
        if "{i}" in entry.hf_name:
            for i in range(cfg.num_layers):
                tensors[entry.hf_name.format(i=i)] = _to_hf(entry, _host(arr[i]))
        else:
            tensors[entry.hf_name] = _to_hf(entry, _host(arr))
    if jax.process_index() != 0:
        return out
    np_dtype = np.dtype(jax.numpy.dtype(dtype))
    tensors = {k: np.ascontiguousarray(v.astype(np_dtype)) for k, v in tensors.items()}
    out.mkdir(parents=True, exist_ok=True)
    _write_shards(tensors, out, max_shard_bytes)
    hf_cfg = cfg.replace(lora=None, param_dtype=dtype).to_hf()
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    if tokenizer_dir is not None:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file() and (f.name.startswith("tokenizer") or f.name in _TOKENIZER_FILES):
                shutil.copy2(f, out / f.name)
    return out


_TOKENIZER_FILES = ("special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja")


def _write_shards(tensors: dict[str, np.ndarray], out: Path, max_shard_bytes: int) -> None:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, arr in tensors.items():
        if shards[-1] and size + arr.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = arr
        size += arr.nbytes
    if len(shards) == 1:
        save_file(shards[0], out / "model.safetensors")
        return
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, out / fname)
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(a.nbytes for a in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
