"""open_clip surrogates: tiny random ViT and ModifiedResNet CLIPs written to a folder (config
JSON + weights), loaded back with nothing downloaded; attention from the hooks checked against
torch's own attention weights computed block by block."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from advbench.models.clip import ClipSpec, Surrogate, clear_cache, load_surrogate  # noqa: E402
from tests.conftest import (  # noqa: E402
    TINY_RN,
    TINY_VIT,
    write_open_clip_local_dir,
    write_tiny_open_clip,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    vit = write_tiny_open_clip(folder, "mfl-tiny-vit", TINY_VIT)
    rn = write_tiny_open_clip(folder, "mfl-tiny-rn", TINY_RN)
    return {"vit": vit, "rn": rn, "folder": folder}


def spec(files, **kw) -> ClipSpec:
    cfg, weights = files
    return ClipSpec(model=cfg.stem, pretrained=str(weights), model_config_file=cfg,
                    device="cpu", **kw)


def test_loads_from_local_files_once_and_encodes_normalised(tiny):
    s = load_surrogate(spec(tiny["vit"]))
    assert load_surrogate(spec(tiny["vit"])) is s  # cached per process by the spec
    assert s.input_size == 32 and s.has_attention and s.grid_size == (4, 4)
    assert s.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    z = s.encode_image(x)
    assert z.shape == (3, 32) and torch.allclose(z.norm(dim=-1), torch.ones(3), atol=1e-5)
    z[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # differentiable
    t = s.encode_text(["left pleural effusion", "normal chest"])
    assert t.shape == (2, 32) and not t.requires_grad
    # the weights are the ones written, not a fresh random init
    ref = open_clip.create_model("mfl-tiny-vit", pretrained=str(tiny["vit"][1]))
    assert torch.equal(ref.visual.conv1.weight, s.model.visual.conv1.weight)


def test_grayscale_is_repeated_to_three_channels(tiny):
    s = load_surrogate(spec(tiny["vit"]))
    g = torch.rand(2, 1, 32, 32)
    assert torch.allclose(s.encode_image(g), s.encode_image(g.repeat(1, 3, 1, 1)), atol=1e-6)
    with pytest.raises(ValueError, match="resize first"):
        s.encode_image(torch.rand(1, 3, 40, 40))


def hand_attention(model, x: torch.Tensor) -> torch.Tensor:
    """Block by block with torch's own MultiheadAttention weights (need_weights=True)."""
    v = model.visual
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    h = v._embeds((x - mean) / std)
    total = 0
    for block in v.transformer.resblocks:
        y = block.ln_1(h)
        _, w = block.attn(y, y, y, need_weights=True, average_attn_weights=True)
        total = total + w[:, 0, 1:]
        h = block(h)
    return total.reshape(x.shape[0], *v.grid_size)


def test_attention_from_hooks_equals_a_hand_computation(tiny):
    s = load_surrogate(spec(tiny["vit"]))
    assert s.model.visual.transformer.resblocks[0].attn.num_heads == 2  # heads are averaged
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    a = s.attention(x)
    with torch.no_grad():
        want = hand_attention(s.model, x)
    assert a.shape == (2, 4, 4)
    torch.testing.assert_close(a, want, atol=1e-5, rtol=1e-4)
    # < 1 per layer: the CLS token's attention to itself is left out
    assert float(a.detach().sum(dim=(1, 2)).max()) <= 2.0 + 1e-5
    (a[:, 0, 0].sum()).backward()
    assert x.grad.abs().sum() > 0  # differentiable
    z, a2 = s.encode_and_attend(x.detach())
    torch.testing.assert_close(a2, want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(z, s.encode_image(x.detach()))


def test_resnet_tower_has_no_attention_and_says_why(tiny):
    s = load_surrogate(spec(tiny["rn"]))
    assert not s.has_attention and s.grid_size is None
    assert s.encode_image(torch.rand(2, 1, 32, 32)).shape == (2, 32)
    with pytest.raises(NotImplementedError, match="ModifiedResNet"):
        s.attention(torch.rand(1, 3, 32, 32))


def test_local_dir_and_input_size_override(tiny, tmp_path):
    bundle = write_open_clip_local_dir(tmp_path / "bundle", *tiny["vit"])
    s = load_surrogate(ClipSpec(model="bundle", pretrained=bundle, device="cpu"))
    ref = load_surrogate(spec(tiny["vit"]))
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(s.encode_image(x), ref.encode_image(x))
    big = load_surrogate(spec(tiny["vit"], input_size=48))
    assert big.input_size == 48 and big.grid_size == (6, 6)
    assert big.attention(torch.rand(1, 3, 48, 48)).shape == (1, 6, 6)


def test_spec_errors_are_clear(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.bin"):
        load_surrogate(ClipSpec(model="ViT-B-16", pretrained=str(tmp_path / "nowhere.bin"),
                                device="cpu"))
    with pytest.raises(ValueError, match="pretrained is required"):
        ClipSpec(model="ViT-B-16")
    with pytest.raises(ValueError, match="defines model"):
        ClipSpec(model="ViT-B-16", pretrained="x.bin", model_config_file=tiny["vit"][0])
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        load_surrogate(spec(tiny["vit"], precision="fp16"))
    clear_cache()


def test_wraps_a_model_built_in_memory(tiny):
    torch.manual_seed(1)
    s = Surrogate(open_clip.create_model("mfl-tiny-vit"), name="mem", device="cpu")
    assert s.encode_image(torch.rand(1, 3, 32, 32)).shape == (1, 32)
    with pytest.raises(ValueError, match="no tokenizer"):
        s.encode_text(["x"])
