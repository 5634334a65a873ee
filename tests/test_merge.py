import pytest
import torch

from mowe.errors import MoWEInputError
from mowe.merge import merge_audio_features

A = 99


def _inputs():
    ids = torch.tensor(
        [[5, A, 6, 7, 0, 0], [0, 8, A, 9, A, 10]]
    )  # sample 0 right-padded, sample 1 left-padded
    am = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]])
    emb = ids.float()[..., None].repeat(1, 1, 2)
    audio = -torch.arange(1, 1 + 3 * 4 * 2).float().view(3, 4, 2)
    return ids, am, emb, audio, torch.tensor([2, 4, 1])


@pytest.mark.parametrize("side", ["right", "left"])
def test_clips_replace_placeholders_in_reading_order(side):
    ids, am, emb, audio, al = _inputs()
    m = merge_audio_features(
        input_ids=ids,
        inputs_embeds=emb,
        attention_mask=am,
        audio_embeds=audio,
        audio_lengths=al,
        audio_token_id=A,
        labels=ids,
        padding_side=side,
    )
    row0 = [5.0, -1.0, -3.0, 6.0, 7.0]
    row1 = [8.0, -9.0, -11.0, -13.0, -15.0, 9.0, -17.0, 10.0]
    got0 = m.inputs_embeds[0, :, 0][m.attention_mask[0].bool()].tolist()
    assert got0 == row0 and m.inputs_embeds[1, :, 0].tolist() == row1
    assert m.attention_mask.sum(1).tolist() == [5, 8]
    if side == "left":
        assert m.attention_mask[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
        assert m.position_ids[0, 3:].tolist() == [0, 1, 2, 3, 4]
    else:
        assert m.attention_mask[0].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
        assert m.position_ids[0, :5].tolist() == [0, 1, 2, 3, 4]
    # Audio and padding positions never carry loss.
    lab0 = m.labels[0][m.attention_mask[0].bool()].tolist()
    assert lab0 == [5, -100, -100, 6, 7]
    assert m.audio_positions.sum().item() == 7


def test_padding_side_of_the_input_does_not_matter():
    ids, am, emb, audio, al = _inputs()
    kw = dict(audio_embeds=audio[:1], audio_lengths=al[:1], audio_token_id=A, padding_side="right")
    right = merge_audio_features(input_ids=ids[:1], inputs_embeds=emb[:1], attention_mask=am[:1], **kw)
    shifted_ids = torch.tensor([[0, 0, 5, A, 6, 7]])
    shifted = merge_audio_features(
        input_ids=shifted_ids,
        inputs_embeds=shifted_ids.float()[..., None].repeat(1, 1, 2),
        attention_mask=torch.tensor([[0, 0, 1, 1, 1, 1]]),
        **kw,
    )
    torch.testing.assert_close(right.inputs_embeds, shifted.inputs_embeds)


def test_count_mismatch_names_each_sample():
    ids, am, emb, audio, al = _inputs()
    with pytest.raises(
        MoWEInputError, match=r"3 audio placeholder\(s\) \(sample 0: 1, sample 1: 2\) but 2 audio clip"
    ):
        merge_audio_features(
            input_ids=ids,
            inputs_embeds=emb,
            attention_mask=am,
            audio_embeds=audio[:2],
            audio_lengths=al[:2],
            audio_token_id=A,
        )


def test_placeholder_on_padding_is_an_error():
    ids, am, emb, audio, al = _inputs()
    am = am.clone()
    am[0, 1] = 0
    with pytest.raises(MoWEInputError, match="sample 0 has an audio placeholder on a padded"):
        merge_audio_features(
            input_ids=ids,
            inputs_embeds=emb,
            attention_mask=am,
            audio_embeds=audio,
            audio_lengths=al,
            audio_token_id=A,
        )


def test_gradient_flows_to_audio_and_text():
    ids, am, emb, audio, al = _inputs()
    emb.requires_grad_(True)
    audio.requires_grad_(True)
    m = merge_audio_features(
        input_ids=ids,
        inputs_embeds=emb,
        attention_mask=am,
        audio_embeds=audio,
        audio_lengths=al,
        audio_token_id=A,
    )
    m.inputs_embeds.sum().backward()
    assert audio.grad[0, :2].abs().sum() > 0 and audio.grad[0, 2:].abs().sum() == 0
    assert emb.grad[0, 0].abs().sum() > 0 and emb.grad[0, 1].abs().sum() == 0
