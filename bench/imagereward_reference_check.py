"""Check the in-process ImageReward reward against the ``image-reward`` package's own model (not run by CI).

Writes the tiny random ImageReward (``tafs.rewards.tiny.imagereward``) and a few PNG images to a temporary
folder, then, in a Python where the package imports (``--ref-python``), builds the package's ``ImageReward``
with the tiny sizes, loads ``ImageReward.pt`` into it with ``strict=True`` (so the tiny checkpoint's names and
shapes are the original format) and scores the images with ``ImageReward.score(prompt, PIL image)``. Back here,
the reward scores the same PNGs; the script prints the max differences of token ids, pixel values
(torchvision on PIL vs our torch preprocessing), the score on identical pixels (the models alone) and the
end-to-end score.

The package cannot be imported as released with today's stack: ``ImageReward/__init__`` imports OpenAI's
git-only ``clip`` and diffusers' ReFL, and its ``med.py`` needs transformers 4 (``apply_chunking_to_forward``
from ``transformers.modeling_utils``). A scratch venv that works::

    python -m venv /tmp/irvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/irvenv/lib/python3.11/site-packages/main.pth   # from the repo root
    /tmp/irvenv/bin/pip install --no-deps image-reward fairscale
    /tmp/irvenv/bin/pip install "transformers==4.46.3" "tokenizers<0.21" "huggingface_hub<1.0"
    .venv/bin/python bench/imagereward_reference_check.py --ref-python /tmp/irvenv/bin/python

The reference step imports only ``ImageReward.ImageReward`` and ``models.BLIP`` (the package's ``__init__``
files are bypassed); ``create_vit`` and ``init_tokenizer`` are replaced by the tiny ViT and the tiny folder's
vocabulary, and the hard-coded ``MLP(768)`` by the package's ``MLP`` of the tiny text width.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch

PROMPTS = ["a photo of a cat", "a red car on the left of two blue houses",
           "a painting of a dog with a small bird above it", ""]
SIZES = [(512, 512), (512, 768), (640, 512), (256, 256)]  # (H, W)


def _images(folder: Path) -> list[Path]:
    """Smooth gradients with a little texture, as 8-bit PNGs (the same bytes reach PIL and torch)."""
    from PIL import Image

    paths = []
    gen = torch.Generator().manual_seed(0)
    for i, (h, w) in enumerate(SIZES):
        y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        img = torch.stack([x, y, 0.5 + 0.5 * torch.sin(6.28 * (x + y) * (i + 1))])
        img = (img + 0.05 * torch.randn(3, h, w, generator=gen)).clamp(0, 1)
        arr = (img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        paths.append(folder / f"image{i}.png")
        Image.fromarray(arr).save(paths[-1])
    return paths


# ---- the reference side: runs where `image-reward` is installed, imports nothing from tafs ----

def _import_package():
    """The package's model modules without its ``__init__`` files (they import clip, diffusers, datasets)."""
    spec = importlib.util.find_spec("ImageReward")
    if spec is None:
        raise SystemExit(f"{sys.executable}: the `image-reward` package is not installed (see --ref-python)")
    root = Path(spec.origin).parent
    for name, sub in (("ImageReward", root), ("ImageReward.models", root / "models")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(sub)]
        sys.modules[name] = stub
    return (importlib.import_module("ImageReward.ImageReward"),
            importlib.import_module("ImageReward.models.BLIP.blip_pretrain"),
            importlib.import_module("ImageReward.models.BLIP.vit"))


# BLIP's med_config.json as in the repository (train/src/config/med_config.json): the real text encoder's sizes.
REAL_MED = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
            "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
            "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524,
            "encoder_width": 768, "add_cross_attention": True}


def _tiny_vit(vit, state):
    """A ``create_vit`` building the package's VisionTransformer at the checkpoint's width and depth."""
    width = state["blip.visual_encoder.pos_embed"].shape[-1]
    depth = len({k.split(".")[3] for k in state if k.startswith("blip.visual_encoder.blocks.")})

    def create_vit(kind, image_size, *args, **kwargs):
        return vit.VisionTransformer(img_size=image_size, patch_size=16, embed_dim=width, depth=depth,
                                     num_heads=width // 64, drop_path_rate=0.1), width

    return create_vit


def _package_model(model_dir: Path, full_size: bool):
    """The package's ImageReward: the tiny checkpoint loaded strictly, or (``full_size``) the real ViT-L + BERT
    sizes with the package's own random init, nudged off it, saved as the checkpoint our side loads."""
    from transformers import BertTokenizer

    ir, blip_pretrain, vit = _import_package()

    def init_tokenizer():  # blip.py's, on the tiny folder's vocabulary instead of bert-base-uncased
        tok = BertTokenizer(str(model_dir / "vocab.txt"), do_lower_case=True)
        tok.add_special_tokens({"bos_token": "[DEC]"})
        tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        tok.enc_token_id = tok.additional_special_tokens_ids[0]
        return tok

    blip_pretrain.init_tokenizer = init_tokenizer
    med_config = model_dir / "med_config.json"
    if full_size:
        med_config.write_text(json.dumps(REAL_MED))
        torch.manual_seed(0)
        model = ir.ImageReward(med_config=str(med_config), device="cpu")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
        torch.save(model.state_dict(), model_dir / "ImageReward.pt")
        return model.eval()
    state = torch.load(model_dir / "ImageReward.pt", map_location="cpu")
    blip_pretrain.create_vit = _tiny_vit(vit, state)
    model = ir.ImageReward(med_config=str(med_config), device="cpu")
    model.mlp = ir.MLP(json.loads(med_config.read_text())["hidden_size"])  # the package hard-codes MLP(768)
    model.load_state_dict(state, strict=True)
    return model.eval()


def reference(folder: Path, full_size: bool = False) -> None:
    """Build the package's ImageReward (see ``_package_model``) and score the PNGs with it."""
    from PIL import Image

    model = _package_model(folder / "model", full_size)
    pils = [Image.open(folder / f"image{i}.png") for i in range(len(SIZES))]
    with torch.no_grad():
        scores = [model.score(p, im) for p, im in zip(PROMPTS, pils)]
        pixels = torch.stack([model.preprocess(im) for im in pils])
        tok = model.blip.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=35,
                                   return_tensors="pt")
        on_pixels = model.score_gard(tok.input_ids, tok.attention_mask, pixels).squeeze(-1)
    torch.save({"scores": torch.tensor(scores), "pixels": pixels, "on_pixels": on_pixels,
                "input_ids": tok.input_ids, "keys": sorted(model.state_dict())}, folder / "reference.pt")


# ---- our side ----

def compare(folder: Path) -> dict[str, float]:
    """Score the same PNGs with the reward and compare with ``reference.pt``."""
    import numpy as np
    from PIL import Image

    from tafs.rewards import imagereward as irw

    ref = torch.load(folder / "reference.pt")
    reward = irw.imagereward(path=str(folder / "model"), device="cpu")
    images = [torch.from_numpy(np.array(Image.open(folder / f"image{i}.png"))).permute(2, 0, 1).float() / 255
              for i in range(len(SIZES))]
    ours = torch.cat([reward([p], [{}], im[None]) for p, im in zip(PROMPTS, images)])
    tok = reward.tokenizer(PROMPTS, padding="max_length", truncation=True, max_length=irw.MAX_TOKENS,
                           return_tensors="pt")
    with torch.no_grad():
        on_pixels = (reward.model(ref["pixels"], tok.input_ids, tok.attention_mask) - irw.MEAN) / irw.STD
    pixels = torch.cat([irw.preprocess(im[None], 224) for im in images])
    saved = set(torch.load(folder / "model" / "ImageReward.pt"))
    return {"state-dict keys: checkpoint vs package model (symmetric difference)":
            float(len(saved ^ set(ref["keys"]))),
            "token ids": float((tok.input_ids != ref["input_ids"]).sum()),
            "pixel values (normalised)": float((pixels - ref["pixels"]).abs().max()),
            "score on identical pixels (models only)": float((on_pixels - ref["on_pixels"]).abs().max()),
            "score end to end (PIL vs torch preprocessing)": float((ours - ref["scores"]).abs().max()),
            "score range (ours)": float(ours.max() - ours.min())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref-python", default=sys.executable, help="a Python where `image-reward` imports")
    p.add_argument("--full-size", action="store_true", help="the real ViT-L + BERT-base sizes (random weights, "
                   "about 450 M parameters: ~2 GB per copy, a minute on a CPU) instead of the tiny model")
    p.add_argument("--reference", type=Path, help=argparse.SUPPRESS)  # the reference step, in --ref-python
    a = p.parse_args(argv)
    if a.reference:
        return reference(a.reference, a.full_size)
    from tafs.rewards.tiny.imagereward import save_tiny

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_tiny(folder / "model")
        _images(folder)
        cmd = [a.ref_python, __file__, "--reference", str(folder)] + (["--full-size"] if a.full_size else [])
        if subprocess.run(cmd, check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"}).returncode:
            raise SystemExit(f"the reference step failed in {a.ref_python}")
        for what, diff in compare(folder).items():
            print(f"{what}: {diff:.3g}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
