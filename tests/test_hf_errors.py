"""Every way a checkpoint folder can be wrong gets one clear error naming the problem."""

import json

import numpy as np
import pytest
import torch

from kd_jax.models import ModelConfigError, hf_io
from kd_jax.models.safetensors_io import SafetensorsFile, save_file
from tests.hf_fixtures import llama_config, make_hf_model


@pytest.fixture
def checkpoint(tmp_path):
    make_hf_model(llama_config(num_hidden_layers=1), tmp_path)
    return tmp_path


def _rewrite_weights(folder, edit):
    st = SafetensorsFile(folder / "model.safetensors")
    tensors = {k: np.array(st.array(k)) for k in st.keys()}
    edit(tensors)
    save_file(tensors, folder / "model.safetensors")


def test_missing_folder(tmp_path):
    with pytest.raises(hf_io.CheckpointError, match="does not exist"):
        hf_io.load(tmp_path / "nope")


def test_no_config_json(checkpoint):
    (checkpoint / "config.json").unlink()
    with pytest.raises(hf_io.CheckpointError, match="has no config.json"):
        hf_io.load(checkpoint)


def test_unsupported_architecture(checkpoint):
    cfg = json.loads((checkpoint / "config.json").read_text())
    cfg.update(architectures=["MistralForCausalLM"], model_type="mistral")
    (checkpoint / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelConfigError, match="Unsupported architecture.*MistralForCausalLM"):
        hf_io.load(checkpoint)


def test_unsupported_rope_scaling(checkpoint):
    cfg = json.loads((checkpoint / "config.json").read_text())
    cfg.pop("rope_parameters", None)
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (checkpoint / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelConfigError, match="Unsupported rope scaling 'yarn'"):
        hf_io.load(checkpoint)


def test_missing_tensor(checkpoint):
    _rewrite_weights(checkpoint, lambda t: t.pop("model.layers.0.mlp.up_proj.weight"))
    with pytest.raises(
        hf_io.CheckpointError, match="no tensor 'model.layers.0.mlp.up_proj.weight'"
    ):
        hf_io.load(checkpoint)


def test_shape_mismatch(checkpoint):
    def shrink(t):
        t["model.norm.weight"] = t["model.norm.weight"][:-1]

    _rewrite_weights(checkpoint, shrink)
    with pytest.raises(hf_io.CheckpointError, match="'model.norm.weight' has shape \\[63\\]"):
        hf_io.load(checkpoint)


def test_pickle_checkpoint_is_refused(tmp_path):
    model = make_hf_model(llama_config(num_hidden_layers=1), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(hf_io.CheckpointError, match="pickle checkpoints.*safe_serialization=True"):
        hf_io.load(tmp_path)


def test_missing_shard_listed_in_index(tmp_path):
    make_hf_model(llama_config(num_hidden_layers=1), tmp_path, max_shard_size="20KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(hf_io.CheckpointError, match=f"lists shard.*{shard.name}"):
        hf_io.load(tmp_path)


def test_quantized_config_is_refused(checkpoint):
    """A bitsandbytes fine-tune's config.json (as published, see real-data hf_configs)."""
    cfg = json.loads((checkpoint / "config.json").read_text())
    cfg["quantization_config"] = {"load_in_8bit": True, "quant_method": "bitsandbytes"}
    (checkpoint / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(hf_io.CheckpointError, match="declares quantized weights.*bitsandbytes"):
        hf_io.load(checkpoint)
    with pytest.raises(hf_io.CheckpointError, match="dequantize"):
        hf_io.read_config(checkpoint)
