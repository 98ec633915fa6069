"""Chapter 05's inference, training stages and judge: chat (multi-turn, multi-image, batched), the stage
freezing, the VQA read-out and the LLaVA-Bench-style judge."""

from __future__ import annotations

import pytest
import torch

from vlm_primer.backbones import Llava, LlavaConfig
from vlm_primer.backbones.data import prompt_ids
from vlm_primer.backbones.inference import chat, generate_replies
from vlm_primer.evaluation.judge import answer_facts, judge_score, relative_score
from vlm_primer.text import Tokenizer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Llava(LlavaConfig.from_preset("tiny")).eval()


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.load()


def _greedy_by_hand(model, ids, pixels, steps, end_id):
    """Recompute the whole sequence at every step (no cache), argmax, stop at <|end|>."""
    embeds = model.embed(torch.tensor([ids]), pixels)
    out = []
    for _ in range(steps):
        nxt = int(model.language_model(inputs_embeds=embeds).logits[0, -1].argmax())
        if nxt == end_id:
            break
        out.append(nxt)
        embeds = torch.cat([embeds, model.language_model.tok_emb(torch.tensor([[nxt]]))], dim=1)
    return out


def test_multi_turn_multi_image_chat_equals_greedy_decoding_by_hand(model, tok):
    images = torch.rand(2, 3, 48, 48)
    messages = [{"role": "user", "content": "<image>what color is the star?"},
                {"role": "assistant", "content": "red."},
                {"role": "user", "content": "<image>and in this one?"}]
    reply = chat(model, messages, images, max_new_tokens=12)
    ids = prompt_ids(tok, messages, [model.tokens_per_image] * 2)
    assert ids.count(model.cfg.image_token_id) == 2 * model.tokens_per_image
    assert reply == tok.decode(_greedy_by_hand(model, ids, images, 12, tok.end_id)).strip()
    # sampling is repeatable with a generator, and the draws differ from one another
    draws = [chat(model, "describe it.", images[0], max_new_tokens=8, temperature=1.0,
                  generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2, 3)]
    assert draws[0] == draws[1] and len(set(draws)) > 1
    assert isinstance(chat(model, "hello", max_new_tokens=4), str)  # text only: no image, no placeholder


def test_batched_replies_equal_one_at_a_time(model, tok):
    prompts = ["what color is the star?", "is there a red circle in the image?", "how many squares are there?"]
    images = torch.rand(3, 3, 48, 48)
    batched = generate_replies(model, prompts, images, max_new_tokens=6, batch_size=3)
    single = [generate_replies(model, [p], images[i:i + 1], max_new_tokens=6)[0] for i, p in enumerate(prompts)]
    assert batched == single


def test_chat_errors_name_the_problem(model):
    with pytest.raises(ValueError, match="1 <image> placeholders but 2 image"):
        chat(model, "<image>what is this?", torch.rand(2, 3, 48, 48))
    with pytest.raises(ValueError, match="ends with an assistant turn"):
        chat(model, [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "hello"}],
             torch.rand(3, 48, 48))
    with pytest.raises(ValueError, match="one image per prompt"):
        generate_replies(model, ["a", "b"], torch.rand(1, 3, 48, 48))


def test_stage_freezing_and_the_frozen_lm_arm(model):
    m = Llava(LlavaConfig.from_preset("tiny"))
    n1 = m.set_stage(1)
    assert n1 == sum(p.numel() for p in m.connector.parameters())
    n2 = m.set_stage(2)
    assert n2 == n1 + sum(p.numel() for p in m.language_model.parameters())
    assert m.set_stage(2, train_language=False) == n1
    assert m.set_stage(2, train_vision=True) == sum(p.numel() for p in m.parameters())


def test_train_stage_moves_only_what_the_stage_trains():
    from vlm_primer.backbones.stages import stage_data, train_stage, vqa_set

    torch.manual_seed(0)
    m = Llava(LlavaConfig.from_preset("tiny"))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    history = train_stage(m, 1, stage_data("caption", m, None, size=64), 2, batch=8)
    assert len(history) >= 1 and history[-1]["step"] == 2
    moved = {k for k, v in m.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith("connector.") for k in moved)
    data = stage_data("mix", m, None, size=10)
    assert {data[i]["kind"] for i in range(len(data))} == {"instruct", "vqa"}
    assert all(q.qtype != "size" for q in (vqa_set(40).question(i) for i in range(40)))


def test_judge_reads_facts_not_wording():
    teacher = "the image shows two objects on a dark background. there is a purple circle at the top."
    assert answer_facts("a violet disk") == answer_facts("a purple circle") == {("object", "purple", "circle"): 1}
    assert answer_facts("there are 2 large red stars") == {("number", "two"): 1, ("object", "red", "star"): 1}
    assert answer_facts("no. there are no squares")[("verdict", "no")] == 1
    assert judge_score(teacher, teacher) == 10.0
    reordered = "there is a violet disk at the top. the picture holds two objects."
    assert judge_score(reordered, teacher) == 10.0  # order and wording do not count
    wrong_color = teacher.replace("purple", "green")
    invented = teacher + " there is a red star."
    assert 1.0 < judge_score(invented, teacher) < 10.0 and 1.0 < judge_score(wrong_color, teacher) < 10.0
    assert judge_score("", teacher) == 1.0 and judge_score("hello there", "fine thanks") == 10.0
    assert relative_score([teacher, ""], [teacher, teacher]) == pytest.approx(11 / 20)
    with pytest.raises(ValueError, match="as many answers as references"):
        relative_score([teacher], [])
    with pytest.raises(TypeError, match="lists of str"):  # a str is not a list of one-letter answers
        relative_score("abc", "abd")
    with pytest.raises(TypeError, match="must be a str"):
        answer_facts(None)


def test_flamingo_chat_reads_each_image_of_the_conversation(tok):
    """A Flamingo takes the images of one sequence as ``(1, N, 3, H, W)``: chat gives it that, so a
    two-image conversation is one sequence with two images, not two sequences of one."""
    from vlm_primer.backbones import Flamingo, FlamingoConfig

    torch.manual_seed(0)
    model = Flamingo(FlamingoConfig.from_preset("tiny")).eval()
    for layer in model.gated_layers:  # open the gates, or the images would not matter
        torch.nn.init.constant_(layer.alpha_xattn, 1.0)
    size = model.cfg.vision.image_size
    images = torch.rand(2, 3, size, size)
    messages = [{"role": "user", "content": "<image>what color is the star?"},
                {"role": "assistant", "content": "red."},
                {"role": "user", "content": "<image>and in this one?"}]
    ids = prompt_ids(tok, messages, [1, 1], model.cfg.image_token_id)
    by_hand = []
    for _ in range(6):
        nxt = int(model(torch.tensor([ids + by_hand]), images[None]).logits[0, -1].argmax())
        if nxt == tok.end_id:
            break
        by_hand.append(nxt)
    assert chat(model, messages, images, max_new_tokens=6) == tok.decode(by_hand).strip()


def test_instructblip_chat_gives_its_qformer_the_last_request(tok):
    """``chat`` passes an InstructBLIP its instruction as ``generate_replies`` does, content as text or as parts."""
    from vlm_primer.backbones import InstructBlip, InstructBlipConfig

    torch.manual_seed(0)
    model = InstructBlip(InstructBlipConfig()).eval()
    image = torch.rand(3, model.cfg.vision.image_size, model.cfg.vision.image_size)
    as_text = [{"role": "user", "content": "<image>what color is the star?"}]
    as_parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what color is the star?"}]}]
    reply = generate_replies(model, [as_text], image[None], max_new_tokens=5)
    assert generate_replies(model, [as_parts], image[None], max_new_tokens=5) == reply
    assert chat(model, as_text, image, max_new_tokens=5) == reply[0]
    assert chat(model, as_parts, [image], max_new_tokens=5) == reply[0]  # a list of (3, H, W) images too


def test_bad_image_inputs_are_named(model):
    from vlm_primer.backbones import LlavaNext, LlavaNextConfig
    from vlm_primer.backbones.connectors import pixel_shuffle
    from vlm_primer.backbones.llava import expand_image_tokens

    for bad in (dict(connector="perceiver"), dict(connector="qformer"), dict(select_feature="cls_patch")):
        with pytest.raises(ValueError, match="lays the tiles"):
            LlavaNextConfig.from_preset("tiny", **bad)
    nxt = LlavaNext(LlavaNextConfig.from_preset("tiny")).eval()
    with pytest.raises(ValueError, match="one \\(H, W\\) in image_sizes per image"):
        generate_replies(nxt, ["a", "b"], [torch.rand(5, 3, 48, 48)] * 2, image_sizes=[(48, 96)])
    with pytest.raises(ValueError, match="token count must be an int >= 1"):
        expand_image_tokens([1, 7, 2], 7, 0)
    with pytest.raises(ValueError, match="factor must be an int >= 1"):
        pixel_shuffle(torch.rand(1, 16, 4), 0)


def test_qformer_attention_mask_must_fit_the_text():
    from vlm_primer.backbones.qformer import QFormer, QFormerConfig

    qf = QFormer(QFormerConfig.from_preset("tiny")).eval()
    ids = torch.ones(2, 5, dtype=torch.long)
    image = torch.rand(2, 10, qf.cfg.vision_dim)
    for mask in (torch.ones(2, 7), torch.ones(3, 5)):
        with pytest.raises(ValueError, match="must have input_ids' shape"):
            qf(image, input_ids=ids, attention_mask=mask)
        with pytest.raises(ValueError, match="must have input_ids' shape"):
            qf(input_ids=ids, attention_mask=mask, queries=False)


def test_a_learned_position_lm_keeps_its_context():
    from vlm_primer.backbones.llava import with_context
    from vlm_primer.nn.decoder import DecoderConfig

    text = DecoderConfig.from_preset("tiny").replace(pos_emb="learned")
    assert with_context(text, text.context_length) == text
    for n in (text.context_length // 2, text.context_length * 2):
        with pytest.raises(ValueError, match="learned position table"):
            with_context(text, n)
    assert with_context(text.replace(pos_emb="rope"), 2 * text.context_length).context_length == 2 * text.context_length
