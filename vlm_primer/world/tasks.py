"""torch ``Dataset``s of the world's questions, POPE probes and instructions, and a WebDataset export.

Explained in notebook 01, §Questions and §Instruction data. Like :class:`ShapesCaptionDataset`,
items are generated on the fly from ``(seed, split, index)`` and honour the held-out compositions;
every answer is read off the scene graph (:mod:`vlm_primer.world.vqa`, :mod:`vlm_primer.world.instruct`).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from vlm_primer.text.chat import format_chat
from vlm_primer.world.datasets import SceneDataset
from vlm_primer.world.instruct import INSTRUCTION_KINDS, box_text, instruction
from vlm_primer.world.render import render
from vlm_primer.world.scene import Scene
from vlm_primer.world.vqa import POPE_SETTINGS, QUESTION_TYPES, PopeStats, Question, ask_any, pope_probes


def _check_subset(values: Sequence[str], allowed: Sequence[str], name: str) -> tuple[str, ...]:
    if isinstance(values, str) or not values:
        raise ValueError(f"{name} must be a non-empty list drawn from {tuple(allowed)}, got {values!r}")
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"unknown {name} {bad}; choose from {tuple(allowed)}")
    return tuple(values)


def _question_item(q: Question) -> dict[str, Any]:
    return {"question": q.question, "answer": q.answer, "answers": list(q.answers), "qtype": q.qtype,
            "answer_type": q.answer_type, "sentence": q.sentence}


class ShapesVQADataset(SceneDataset):
    """One balanced question per image (type drawn uniformly from ``qtypes``, see :func:`vqa.ask`).

    Items: ``image``, ``question``, ``answer`` (canonical), ``answers`` (VQAv2's ten references),
    ``qtype``, ``answer_type`` (yes/no, number, other), ``sentence`` (the answer as a sentence),
    ``scene``, ``index``. Other arguments as :class:`SceneDataset`.
    """

    def __init__(self, split: str = "train", size: int = 1000, *, qtypes: Sequence[str] = QUESTION_TYPES,
                 **scene_kw: Any) -> None:
        super().__init__(split, size, **scene_kw)
        self.qtypes = _check_subset(qtypes, QUESTION_TYPES, "qtypes")

    def _ask(self, scene, rng) -> Question:
        cfg = self.config
        return ask_any(scene, rng, self.qtypes, margin=cfg.margin, colors=cfg.colors, shapes=cfg.shapes)

    def question(self, index: int) -> Question:
        """The question of item ``index`` without rendering its image (fast: for priors and statistics)."""
        return self._ask(*self.scene(index))

    def image(self, scene: Scene) -> torch.Tensor:
        """The rendered image of ``scene`` (a subclass may lay it out otherwise:
        :class:`~vlm_primer.world.MosaicVQADataset`)."""
        return render(scene, self.config.image_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._index(index)
        scene, rng = self.scene(index)
        q = self._ask(scene, rng)
        return {"image": self.image(scene), **_question_item(q), "scene": scene, "index": index}


class ShapesPOPEDataset(SceneDataset):
    """POPE probes over ``size`` images: up to ``k`` "yes" and as many "no" probes per image.

    ``setting``: ``random``, ``popular`` (absent objects most frequent in the training split) or
    ``adversarial`` (absent objects that co-occur most with the ones present), with frequencies
    counted on ``stats_size`` scenes of the ``train`` split. One item per probe: ``image``,
    ``question``, ``answer`` (yes/no), ``answers``, ``image_index``, ``scene``.
    """

    def __init__(self, split: str = "val", size: int = 200, *, setting: str = "random", k: int = 3,
                 stats_size: int = 2000, **scene_kw: Any) -> None:
        super().__init__(split, size, **scene_kw)
        if setting not in POPE_SETTINGS:
            raise ValueError(f"setting must be one of {POPE_SETTINGS}, got {setting!r}")
        self.setting, self.k = setting, k
        stats = None
        if setting != "random":
            train = SceneDataset("train", stats_size, self.config, self.seed, self.num_objects, self.held_out)
            stats = PopeStats.from_scenes(train.scene(i)[0] for i in range(stats_size))
        self.probes: list[tuple[int, Question]] = []
        self.scenes = []  # sampled once here; items only render
        cfg = self.config
        for i in range(size):
            scene, rng = self.scene(i)
            self.scenes.append(scene)
            for q in pope_probes(scene, rng, setting, k, stats, colors=cfg.colors, shapes=cfg.shapes):
                self.probes.append((i, q))

    def __len__(self) -> int:
        return len(self.probes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self.probes) <= index < len(self.probes):
            raise IndexError(f"index {index} out of range for {len(self.probes)} probes")
        image_index, q = self.probes[index]
        scene = self.scenes[image_index]
        return {"image": render(scene, self.config.image_size), **_question_item(q), "image_index": image_index,
                "scene": scene, "index": int(index) % len(self.probes)}


class ShapesInstructDataset(SceneDataset):
    """LLaVA-style instruction data (kind drawn uniformly from ``kinds``, see :mod:`instruct`).

    Items: ``image``, ``messages`` (chat messages; the first user turn starts with ``<image>``),
    ``kind``, ``text`` (the conversation in the chat template), ``box_texts`` (every object's box as
    text), ``scene``, ``index``.
    """

    def __init__(self, split: str = "train", size: int = 1000, *, kinds: Sequence[str] = INSTRUCTION_KINDS,
                 **scene_kw: Any) -> None:
        super().__init__(split, size, **scene_kw)
        self.kinds = _check_subset(kinds, INSTRUCTION_KINDS, "kinds")

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = self._index(index)
        scene, rng = self.scene(index)
        cfg = self.config
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        messages = instruction(scene, rng, kind, cfg.image_size, cfg.margin, colors=cfg.colors, shapes=cfg.shapes)
        return {"image": render(scene, cfg.image_size), "messages": messages, "kind": kind,
                "text": format_chat(messages), "box_texts": [box_text(o, cfg.image_size) for o in scene.objects],
                "scene": scene, "index": index}


def export_webdataset(dataset: SceneDataset, out_dir: str | os.PathLike, *, maxcount: int = 1000) -> list[str]:
    """Write a world dataset as WebDataset shards: the image as PNG, its text (the question, or the
    conversation in the chat template) as ``.txt`` and the rest (answers, messages, ...) as ``.json``.

    Refuses a folder that already holds shards (see :func:`vlm_primer.training.write_shards`).
    """
    from vlm_primer.training.shards import write_shards  # world does not depend on training otherwise

    if not isinstance(dataset, SceneDataset):
        raise TypeError(f"dataset must be a Shapes World dataset, got {type(dataset).__name__}")
    first = dataset[0] if len(dataset) else None  # rendered once: checked here, written below
    if first is not None and "image" not in first:  # checked before a shard is written
        raise TypeError(f"export_webdataset writes one image per sample; {type(dataset).__name__}'s items have "
                        f"{sorted(first)}")

    def samples():
        for i in range(len(dataset)):
            item = first if i == 0 else dataset[i]
            text = item.get("text") or item.get("question") or item["caption"]
            meta = {k: v for k, v in item.items() if k not in ("image", "scene", "meaning", "boxes") and
                    isinstance(v, (str, int, float, list, dict))}
            yield {"image": item["image"], "caption": text, "key": f"{dataset.split}-{i:09d}", "meta": meta}

    return write_shards(samples(), out_dir, maxcount=maxcount)


__all__ = ["ShapesInstructDataset", "ShapesPOPEDataset", "ShapesVQADataset", "export_webdataset"]
