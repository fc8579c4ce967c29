"""A tiny Stable-Diffusion pipeline with random weights, built from diffusers' own
classes and saved with ``save_pretrained``: a few hundred kilobytes, no downloads.

The CLIP tokenizer's vocabulary is written here: every byte as a word piece and as
a word end, and no merges, so any text tokenizes (one token per character).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

START, END = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    """CLIP's (and GPT-2's) printable stand-in for each of the 256 bytes."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer_files(folder: Path) -> int:
    """vocab.json and merges.txt for a byte-level CLIP tokenizer; its vocabulary size."""
    pieces = _bytes_to_unicode()
    vocab = [START, END, *pieces, *(piece + "</w>" for piece in pieces)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


def _tokenizer(folder: Path) -> tuple[Any, int]:
    from transformers import CLIPTokenizer

    size = write_tokenizer_files(folder)
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77), size


def _text_encoder(vocab_size: int) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=vocab_size,
        max_position_embeddings=77,
    )
    return CLIPTextModel(config)


def _unet() -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=2,
    )


def _vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=2,
    )


def build_tiny_pipeline(folder: Path) -> Path:
    """Save a random-weight StableDiffusionPipeline under ``folder``; return it."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(0)
    tokenizer, vocab_size = _tokenizer(folder / "_tokenizer_source")
    pipeline = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=_text_encoder(vocab_size),
        tokenizer=tokenizer,
        unet=_unet(),
        scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    target = folder / "pipeline"
    pipeline.save_pretrained(str(target))
    return target
