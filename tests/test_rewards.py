"""Rewards against an independent NumPy computation from the models' own forward outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clinalign.errors import ConfigError, DataError
from clinalign.probe import LinearProbe
from clinalign.rewards import (
    CCSReward,
    CompositeReward,
    DDReward,
    RewardBatch,
    SFSReward,
    VDCReward,
)
from clinalign.rewards.base import CriticReward

CLASSES = ["nevus", "melanoma", "vitiligo"]
PROMPTS = ["small round brown macule", "large asymmetric lesion with black and blue areas", "white patch"]
CHECKLISTS = ["Lesion: round uniform brown", "Lesion: irregular multicolour", "Lesion: depigmented white"]


@pytest.fixture(scope="module")
def probe(clip_critic) -> LinearProbe:
    torch.manual_seed(3)
    p = LinearProbe(clip_critic.embed_dim, CLASSES, critic_name=clip_critic.name)
    with torch.no_grad():
        p.linear.weight.normal_()
        p.linear.bias.normal_()
    return p


@pytest.fixture
def batch() -> RewardBatch:
    torch.manual_seed(1)
    return RewardBatch(PROMPTS, CHECKLISTS, torch.tensor([0, 1, 2]), references=torch.rand(3, 3, 32, 32))


def _raw(critic, images=None, texts=None) -> np.ndarray:
    """Features straight from the model's forward, normalised in NumPy (independent of clinalign's math)."""
    from clinalign.critics.preprocess import preprocess_images

    model = critic.module
    with torch.no_grad():
        if images is not None:
            out = model.get_image_features(pixel_values=preprocess_images(images, critic.preprocess_config))
        else:
            tokens = critic.tokenizer(texts, padding=True, return_tensors="pt")
            out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    x = getattr(out, "pooler_output", out).double().numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_each_reward_equals_independent_computation(clip_critic, probe, batch):
    images = torch.rand(3, 3, 32, 32)
    img = _raw(clip_critic, images=images)
    ref = _raw(clip_critic, images=batch.references)
    np.testing.assert_allclose(
        VDCReward(clip_critic)(images, batch).numpy(), (img * _raw(clip_critic, texts=PROMPTS)).sum(1), atol=1e-5
    )
    np.testing.assert_allclose(
        CCSReward(clip_critic)(images, batch).numpy(), (img * _raw(clip_critic, texts=CHECKLISTS)).sum(1), atol=1e-5
    )
    np.testing.assert_allclose(SFSReward(clip_critic)(images, batch).numpy(), (img * ref).sum(1), atol=1e-5)
    w = probe.linear.weight.detach().double().numpy()
    b = probe.linear.bias.detach().double().numpy()
    logits = img @ w.T + b
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected_dd = log_softmax[np.arange(3), batch.labels.numpy()]
    np.testing.assert_allclose(DDReward(clip_critic, probe)(images, batch).numpy(), expected_dd, atol=1e-5)


def test_sfs_of_an_image_with_itself_is_one(clip_critic):
    images = torch.rand(2, 3, 32, 32)
    batch = RewardBatch(PROMPTS[:2], CHECKLISTS[:2], torch.tensor([0, 1]), references=images.clone())
    torch.testing.assert_close(SFSReward(clip_critic)(images, batch), torch.ones(2), atol=1e-5, rtol=0)


def test_gradients_flow_to_images_only(clip_critic, probe, batch):
    composite = CompositeReward(
        [VDCReward(clip_critic), CCSReward(clip_critic), DDReward(clip_critic, probe), SFSReward(clip_critic)]
    )
    for reward in composite.rewards:
        images = torch.rand(3, 3, 32, 32, requires_grad=True)
        reward(images, batch).sum().backward()
        assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0, reward.name
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    composite(images, batch).total.sum().backward()
    assert images.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip_critic.module.parameters())
    assert all(p.grad is None and not p.requires_grad for p in probe.parameters())
    assert batch.references.grad is None


def test_composite_runs_the_image_encoder_once_per_batch(clip_critic, probe, batch, monkeypatch):
    seen: list[int] = []
    original = clip_critic.encode_images

    def counting(images):
        seen.append(id(images))
        return original(images)

    monkeypatch.setattr(clip_critic, "encode_images", counting)
    composite = CompositeReward(
        [VDCReward(clip_critic), CCSReward(clip_critic), DDReward(clip_critic, probe), SFSReward(clip_critic)]
    )
    first, second = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    composite(first, batch)
    assert seen.count(id(first)) == 1
    assert seen.count(id(batch.references)) == 1
    # a second trajectory on the same batch (M = 2) reuses the reference embedding
    composite(second, batch)
    assert seen.count(id(second)) == 1 and seen.count(id(batch.references)) == 1
    assert len(seen) == 3


def test_composite_total_is_weighted_mean_and_accepts_any_reward(clip_critic, batch):
    class Brightness:
        name = "brightness"

        def __call__(self, images, batch):
            return images.mean(dim=(1, 2, 3))

    images = torch.rand(3, 3, 32, 32)
    vdc = VDCReward(clip_critic)
    out = CompositeReward([vdc, Brightness()], weights={"vdc": 3.0, "brightness": 1.0})(images, batch)
    expected = (3 * vdc(images, batch) + images.mean(dim=(1, 2, 3))) / 4
    torch.testing.assert_close(out.total, expected)
    assert set(out.components) == {"vdc", "brightness"}
    equal = CompositeReward([vdc, Brightness()])(images, batch)
    torch.testing.assert_close(equal.total, (equal.components["vdc"] + equal.components["brightness"]) / 2)


def test_composite_validation(clip_critic, batch):
    vdc = VDCReward(clip_critic)
    with pytest.raises(ConfigError, match="unique"):
        CompositeReward([vdc, VDCReward(clip_critic)])
    with pytest.raises(ConfigError, match="non-negative"):
        CompositeReward([vdc], weights=[-1.0])
    with pytest.raises(ConfigError, match="1 rewards"):
        CompositeReward([vdc], weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match="unknown rewards"):
        CompositeReward([vdc], weights={"ccs": 1.0})
    with pytest.raises(ConfigError, match="positive"):
        CompositeReward([vdc], weights=[0.0])
    with pytest.raises(ConfigError, match="not a reward"):
        CompositeReward([lambda images, batch: images])

    class Wrong:
        name = "wrong"

        def __call__(self, images, batch):
            return images.mean()

    with pytest.raises(DataError, match="shape"):
        CompositeReward([Wrong()])(torch.rand(3, 3, 32, 32), batch)


def test_sfs_without_references_is_a_clear_error(clip_critic):
    batch = RewardBatch(PROMPTS, CHECKLISTS, torch.tensor([0, 1, 2]))
    with pytest.raises(DataError, match="references"):
        SFSReward(clip_critic)(torch.rand(3, 3, 32, 32), batch)


def test_reward_batch_validation():
    with pytest.raises(DataError, match="batch size"):
        RewardBatch(PROMPTS, CHECKLISTS[:2], torch.tensor([0, 1, 2]))
    with pytest.raises(DataError, match="integer"):
        RewardBatch(PROMPTS, CHECKLISTS, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(DataError, match="batch size"):
        RewardBatch(PROMPTS, CHECKLISTS, torch.tensor([0, 1, 2]), references=torch.rand(2, 3, 8, 8))


def test_dd_reward_checks_probe_space(clip_critic, siglip_critic, probe):
    elsewhere = LinearProbe(clip_critic.embed_dim, CLASSES, critic_name="transformers:elsewhere")
    with pytest.raises(ConfigError, match="fitted on embeddings of critic 'transformers:elsewhere'"):
        DDReward(clip_critic, elsewhere)
    with pytest.raises(ConfigError, match="16-d embeddings but DD reward's critic"):
        DDReward(siglip_critic, probe)
    wrong_dim = LinearProbe(clip_critic.embed_dim + 1, CLASSES)
    with pytest.raises(ConfigError, match="-d embeddings"):
        DDReward(clip_critic, wrong_dim)
    batch = RewardBatch(PROMPTS, CHECKLISTS, torch.tensor([0, 1, 5]))
    with pytest.raises(ConfigError, match="outside"):
        DDReward(clip_critic, probe)(torch.rand(3, 3, 32, 32), batch)


def test_custom_critic_reward_shares_embedding(clip_critic):
    class Norm(CriticReward):
        name = "first_coordinate"

        def from_embeddings(self, image_embeddings, batch):
            return image_embeddings[:, 0]

    images = torch.rand(3, 3, 32, 32)
    batch = RewardBatch(PROMPTS, CHECKLISTS, torch.tensor([0, 1, 2]))
    before = clip_critic.image_encoder_calls
    out = CompositeReward([Norm(clip_critic), VDCReward(clip_critic)])(images, batch)
    assert clip_critic.image_encoder_calls == before + 1
    assert out.components["first_coordinate"].shape == (3,)
