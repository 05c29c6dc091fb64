from pathlib import Path

import pytest

from harness.base import UserError
from harness.model import ALIASES, DEFAULT_MODEL, load_model, local_folder, resolve


def test_alias_resolves_to_the_packaged_gguf():
    r = resolve(DEFAULT_MODEL)
    assert r.kind == "alias"
    assert r.source.endswith(ALIASES[DEFAULT_MODEL][1]) and Path(r.source).is_file()
    assert r.hub_id == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_alias_converts_once_to_a_cached_safetensors_folder():
    folder = Path(local_folder(DEFAULT_MODEL, device="cpu"))
    assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))
    mtime = next(folder.glob("*.safetensors")).stat().st_mtime
    assert Path(local_folder(DEFAULT_MODEL, device="cpu")) == folder  # second call: cache hit
    assert next(folder.glob("*.safetensors")).stat().st_mtime == mtime


def test_gguf_path(tmp_path: Path):
    src = Path(resolve(DEFAULT_MODEL).source)
    link = tmp_path / src.name
    link.symlink_to(src)
    r = resolve(str(link))
    assert r.kind == "gguf"
    assert Path(local_folder(str(link), device="cpu")).is_dir()


def test_local_folder_loads_with_pad_and_chat_template(tiny_model_dir: Path):
    r = resolve(str(tiny_model_dir))
    assert r.kind == "local"
    model, tok = load_model(str(tiny_model_dir), device="cpu")
    assert tok.pad_token is not None and tok.pad_token != tok.eos_token
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>assistant" in text
    assert model.config.pad_token_id == tok.pad_token_id


def test_hub_id_is_kept_for_users_with_network():
    r = resolve("meta-llama/Llama-3.2-1B-Instruct")
    assert (r.kind, r.source) == ("hub", "meta-llama/Llama-3.2-1B-Instruct")


@pytest.mark.parametrize("spec", ["not-a-model", "./missing/folder", "missing.gguf", "a/b/c/d"])
def test_bad_spec_is_a_user_error(spec: str):
    with pytest.raises(UserError) as err:
        resolve(spec)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)


def test_folder_without_config_is_refused(tmp_path: Path):
    with pytest.raises(UserError, match="no config.json"):
        resolve(str(tmp_path))
