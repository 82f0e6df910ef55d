"""Writes the model configs vLLM's scheduler tests name into a local HF cache.

vLLM's ``tests/v1/core/test_scheduler.py`` / ``test_prefix_caching.py`` build
``ModelConfig`` for ``facebook/opt-125m``, ``llava-hf/llava-1.5-7b-hf`` and
``Qwen/Qwen3-Next-80B-A3B-Instruct``; they need the configs (and LLaVA's
processor), never the weights. With no hub access, this writes them under
``HF_HOME/hub`` in the hub-cache layout, so ``HF_HUB_OFFLINE=1`` finds them::

    $SLABCACHE_VLLM_PYTHON -m slabcache.benchmarks.vllm_test_models $HF_HOME
    HF_HOME=... HF_HUB_OFFLINE=1 VLLM_TARGET_DEVICE=cpu pytest ...

Needs ``transformers`` and ``tokenizers`` (vLLM's environment has both). The
LLaVA tokenizer is a word-level stand-in (``t<i>`` for id ``i``, ``<image>`` =
32000): the tests feed token ids, only the processor's image-token expansion
has to work.
"""

from __future__ import annotations

import os
import sys

_SNAPSHOT = "0" * 40


def _snapshot_dir(root: str, name: str) -> str:
    d = os.path.join(root, "hub", "models--" + name.replace("/", "--"))
    snap = os.path.join(d, "snapshots", _SNAPSHOT)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(d, "refs"), exist_ok=True)
    with open(os.path.join(d, "refs", "main"), "w") as f:
        f.write(_SNAPSHOT)
    return snap


def write_all(root: str) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaProcessor,
        OPTConfig,
        PreTrainedTokenizerFast,
        Qwen3NextConfig,
    )

    opt = OPTConfig(
        vocab_size=50272,
        hidden_size=768,
        num_hidden_layers=12,
        ffn_dim=3072,
        num_attention_heads=12,
        max_position_embeddings=2048,
        word_embed_proj_dim=768,
    )
    opt.architectures = ["OPTForCausalLM"]
    opt.torch_dtype = "float16"
    opt.save_pretrained(_snapshot_dir(root, "facebook/opt-125m"))

    text = LlamaConfig(
        vocab_size=32064,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )
    vision = CLIPVisionConfig(
        hidden_size=1024,
        image_size=336,
        intermediate_size=4096,
        num_attention_heads=16,
        num_hidden_layers=24,
        patch_size=14,
        projection_dim=768,
    )
    llava = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=32000,
        projector_hidden_act="gelu",
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    llava.architectures = ["LlavaForConditionalGeneration"]
    llava.torch_dtype = "float16"
    snap = _snapshot_dir(root, "llava-hf/llava-1.5-7b-hf")
    llava.save_pretrained(snap)
    special = {0: "<unk>", 1: "<s>", 2: "</s>", 32000: "<image>"}
    vocab = {special.get(i, f"t{i}"): i for i in range(32064)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
    )
    LlavaProcessor(
        image_processor=image_processor,
        tokenizer=fast,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template="{% for m in messages %}{{m['content']}}{% endfor %}",
    ).save_pretrained(snap)

    qwen = Qwen3NextConfig(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=5120,
        num_hidden_layers=48,
        num_attention_heads=16,
        num_key_value_heads=2,
        head_dim=256,
        linear_num_value_heads=32,
        linear_num_key_heads=16,
        linear_key_head_dim=128,
        linear_value_head_dim=128,
        linear_conv_kernel_dim=4,
        num_experts=512,
        num_experts_per_tok=10,
        moe_intermediate_size=512,
        shared_expert_intermediate_size=512,
        full_attention_interval=4,
        max_position_embeddings=262144,
    )
    qwen.architectures = ["Qwen3NextForCausalLM"]
    qwen.torch_dtype = "bfloat16"
    qwen.save_pretrained(_snapshot_dir(root, "Qwen/Qwen3-Next-80B-A3B-Instruct"))


if __name__ == "__main__":
    write_all(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HF_HOME", "."))
