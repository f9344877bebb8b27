"""The batched MedFocusLeak objective on tiny random CLIPs (a ViT and a ModifiedResNet) loaded
from files: the bound and the mask hold on decoded uint8 images, the objective improves, the
M-Attack baseline touches the mask, an image's result does not depend on its batch-mates."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from advbench.attacks.medfocusleak import crops as C  # noqa: E402
from advbench.attacks.medfocusleak.objective import (  # noqa: E402
    AttackSettings,
    run_attack,
    run_attack_groups,
    unbatched_reference,
)
from advbench.attacks.medfocusleak.regions import background_squares  # noqa: E402
from advbench.models.clip import ClipSpec, load_surrogate  # noqa: E402
from tests.conftest import TINY_RN, TINY_VIT, write_tiny_open_clip  # noqa: E402

TEXTS = ["large left pleural effusion", "right apical pneumothorax", "moderate cardiomegaly"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def surrogates(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    out = []
    for name, cfg in (("mfl-atk-vit", TINY_VIT), ("mfl-atk-rn", TINY_RN)):
        cfg_file, weights = write_tiny_open_clip(folder, name, cfg)
        out.append(load_surrogate(ClipSpec(model=name, pretrained=str(weights),
                                           model_config_file=cfg_file, device="cpu")))
    return out


def images(b: int, size: int = 48, c: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    u8 = rng.integers(0, 256, (b, c, size, size), dtype=np.uint8)
    masks = np.zeros((b, size, size), bool)
    masks[:, size // 3: size // 2 + 4, size // 4: 3 * size // 4] = True
    return u8, torch.from_numpy(u8.astype(np.float32) / 255.0), masks


def decoded(a: np.ndarray) -> np.ndarray:
    """Through PNG and back: what a release would store."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))


@pytest.mark.parametrize("channels", [1, 3])
def test_bound_and_mask_hold_on_decoded_uint8(surrogates, channels):
    u8, _, masks = images(2, c=channels)
    layout = [u8[i, 0] if channels == 1 else u8[i].transpose(1, 2, 0) for i in range(2)]
    settings = AttackSettings(steps=12, epsilon=4 / 255, step_size=2 / 255)
    out = run_attack_groups([(layout[i], masks[i], TEXTS[i]) for i in range(2)], surrogates,
                            settings, device="cpu")
    for i, res in enumerate(out):
        adv = decoded(res.adversarial)
        assert adv.shape == layout[i].shape and adv.dtype == np.uint8
        diff = np.abs(adv.astype(int) - layout[i].astype(int))
        assert diff.max() <= round(settings.epsilon * 255)
        inside = masks[i] if channels == 1 else np.repeat(masks[i][..., None], 3, -1)
        assert np.array_equal(adv[inside], layout[i][inside])  # bit-identical
        assert diff[~inside].max() == 4 and (diff[~inside] > 0).mean() > 0.3


def test_the_objective_improves_and_mifgsm_runs(surrogates):
    _, x, masks = images(3)
    for optimizer in ("ifgsm", "mifgsm"):
        # one square and whole-square crops: the same crop every step, the loss comparable
        settings = AttackSettings(steps=15, squares=1, crop_scale=(1.0, 1.0),
                                  optimizer=optimizer)
        r = run_attack(x, masks, TEXTS, surrogates, settings, device="cpu")
        assert r.loss_history.shape == (16, 3) and r.seconds > 0
        assert (r.final_loss < r.loss_history[0]).all()
        assert r.history(4)[-1][1] < r.history(4)[0][1]
    no_attn = AttackSettings(steps=15, squares=1, crop_scale=(1.0, 1.0), lambda_attn=0.0)
    r = run_attack(x, masks, TEXTS, surrogates, no_attn, device="cpu")
    assert (r.final_similarity > r.similarity_history[0] + 0.01).all()  # cosine rises


def test_m_attack_baseline_changes_the_mask(surrogates):
    u8, x, masks = images(2)
    r = run_attack(x, None, TEXTS[:2], surrogates, AttackSettings(steps=4, masked=False),
                   device="cpu")
    adv = C.quantise(u8, r.delta, 16 / 255)
    assert (adv[:, 0][masks] != u8[:, 0][masks]).mean() > 0.5
    with pytest.raises(ValueError, match="needs masks"):
        run_attack(x, None, TEXTS[:2], surrogates, AttackSettings(steps=1), device="cpu")


def test_an_image_gets_the_same_result_in_any_batch(surrogates):
    u8, x, masks = images(3, seed=3)
    settings = AttackSettings(steps=8, crops_per_step=2, seed=11)
    batch = run_attack(x, masks, TEXTS, surrogates, settings, device="cpu")
    alone = run_attack(x[1:2], masks[1:2], TEXTS[1:2], surrogates, settings, device="cpu",
                       seeds=[12])  # image 1's seed in the batch: settings.seed + 1
    assert batch.seeds == [11, 12, 13]
    np.testing.assert_array_equal(C.quantise(u8[1:2], alone.delta, settings.epsilon),
                                  C.quantise(u8[1:2], batch.delta[1:2], settings.epsilon))
    np.testing.assert_allclose(alone.loss_history[:, 0], batch.loss_history[:, 1], atol=1e-5)


def test_groups_of_different_sizes_keep_order_and_match_a_single_run(surrogates):
    rng = np.random.default_rng(5)
    shapes = [(48, 48), (40, 56), (48, 48, 3), (48, 48)]
    items = []
    for i, shape in enumerate(shapes):
        mask = np.zeros(shape[:2], bool)
        mask[10:20, 12:30] = True
        items.append((rng.integers(0, 256, shape, dtype=np.uint8), mask, TEXTS[i % 3]))
    settings = AttackSettings(steps=3, target="both")
    out = run_attack_groups(items, surrogates, settings, device="cpu", batch_size=8)
    assert [o.adversarial.shape for o in out] == shapes
    assert [o.seed for o in out] == [0, 1, 2, 3]
    img, mask, text = items[3]  # grouped with item 0; alone it must come out the same
    single = run_attack(torch.from_numpy(img[None, None] / np.float32(255)), mask[None],
                        [text], surrogates, settings, device="cpu", seeds=[3])
    np.testing.assert_array_equal(out[3].adversarial,
                                  C.quantise(img[None, None], single.delta, settings.epsilon,
                                             mask[None, None])[0, 0])


def test_unbatched_reference_gives_the_same_kind_of_result(surrogates):
    u8, x, masks = images(2)
    settings = AttackSettings(steps=4, target="image")
    ref = unbatched_reference(x, masks, TEXTS[:2], surrogates, settings, device="cpu")
    bat = run_attack(x, masks, TEXTS[:2], surrogates, settings, device="cpu")
    assert ref.loss_history.shape == bat.loss_history.shape == (5, 2)
    # same crops and objective, another resampling op: close, not equal
    np.testing.assert_allclose(ref.loss_history[0], bat.loss_history[0], atol=0.05)
    adv = C.quantise(u8, ref.delta, settings.epsilon, masks[:, None])
    assert np.array_equal(adv[:, 0][masks], u8[:, 0][masks])


def test_crop_boxes_stay_inside_their_squares_or_the_image():
    mask = np.zeros((60, 80), bool)
    mask[20:40, 30:50] = True
    sq = background_squares(mask, 4, min_side=6)
    boxes = C.sample_boxes([sq, sq[:1]], [0, 1], range(50), 3, (0.5, 1.0), mask.shape)
    assert boxes.shape == (50, 2, 3, 4)
    for b, squares in enumerate([sq, sq[:1]]):
        for y, x, h, w in boxes[:, b].reshape(-1, 4):
            assert h == w and any(sy <= y and sx <= x and y + h <= sy + s and x + w <= sx + s
                                  for sy, sx, s in squares)
            assert not mask[y:y + h, x:x + w].any()
    whole = C.sample_boxes(None, [0], range(50), 2, (0.5, 0.9), (60, 80))
    y, x, h, w = np.moveaxis(whole, -1, 0)
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= 60).all() and (x + w <= 80).all()
    # a stream depends on its own seed and step only, not on the others in the call
    u = C.uniforms([5, 7], [2, 3], 2)
    np.testing.assert_array_equal(u[1, 1], C.uniforms([7], [3], 2)[0, 0])
    assert not np.array_equal(u[1, 0], u[1, 1])


def test_quantise_keeps_the_bound_and_the_mask():
    orig = np.full((1, 1, 2, 3), 250, np.uint8)
    orig[0, 0, 1] = 3
    delta = np.array([[[[16.4, -16.6, 0.3], [-20.0, 2.0, 5.0]]]]) / 255
    mask = np.zeros((2, 3), bool)
    mask[1, 2] = True
    out = C.quantise(orig, delta, 16 / 255, mask)
    np.testing.assert_array_equal(out[0, 0], [[255, 234, 250], [0, 5, 3]])
    assert C.epsilon_pixels(16 / 255) == 16 and C.to_uint8(torch.tensor([0.5, 1.2])).tolist() == [
        128, 255]
    pic = C.render_text("mild left pleural effusion", 64)
    assert pic.shape == (3, 64, 64) and pic.min() < 0.5 < pic.max()


def test_settings_reject_a_bound_below_one_level():
    with pytest.raises(ValueError, match="below one uint8 level"):
        AttackSettings(epsilon=0.5 / 255)
    with pytest.raises(ValueError, match="crop_scale"):
        AttackSettings(crop_scale=(0.9, 0.5))


def _margin(surrogates, x, targets, truths):
    """Mean over surrogates of cos(whole image, target) − cos(whole image, truth)."""
    out = 0.0
    for s in surrogates:
        with torch.no_grad():
            z = s.encode_image(C.resize(x, s.input_size))
        out = out + ((z * s.encode_text(targets)).sum(-1) - (z * s.encode_text(truths)).sum(-1))
    return out / len(surrogates)


def test_truth_weight_and_global_view_move_the_whole_image_from_truth_to_target(surrogates):
    """With the true findings pushed away and the whole image among the views, the image as
    a victim sees it moves toward the target and away from the truth, on the same pixels
    budget; the mask stays untouched."""
    u8, x, masks = images(3, size=48)
    truths = [TEXTS[1], TEXTS[2], TEXTS[0]]
    settings = AttackSettings(steps=15, epsilon=16 / 255, step_size=2 / 255, lambda_attn=0.0,
                              truth_weight=1.0, global_view=True)
    r = run_attack(x, masks, TEXTS, surrogates, settings, device="cpu", truth_texts=truths)
    before = _margin(surrogates, x, TEXTS, truths)
    after = _margin(surrogates, r.adversarial, TEXTS, truths)
    assert (after > before + 0.01).all(), (before, after)
    assert (r.delta[:, 0][torch.from_numpy(masks)] == 0).all()
    # the history is the aimed similarity (target − truth), and it rises
    assert (r.final_similarity > r.similarity_history[0]).all()
    with pytest.raises(ValueError, match="true findings"):
        run_attack(x, masks, TEXTS, surrogates, settings, device="cpu")


def test_global_view_and_truth_weight_agree_with_the_unbatched_reference(surrogates):
    _, x, masks = images(2, size=40)
    settings = AttackSettings(steps=3, squares=2, truth_weight=0.5, global_view=True,
                              lambda_attn=0.5)
    truths = TEXTS[1:3]
    a = run_attack(x, masks, TEXTS[:2], surrogates, settings, device="cpu", truth_texts=truths)
    b = unbatched_reference(x, masks, TEXTS[:2], surrogates, settings, device="cpu",
                            truth_texts=truths)
    # same crops and objective, another resampling op: close, not equal
    np.testing.assert_allclose(a.loss_history[0], b.loss_history[0], atol=0.01)
    np.testing.assert_allclose(a.similarity_history[0], b.similarity_history[0], atol=0.01)
