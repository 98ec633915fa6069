"""Shapes World: a controllable world of scenes and captions (chapter 01).

A scene graph (:class:`Scene` of :class:`Obj`) is the single source of truth; from it we render
anti-aliased images and boxes, write captions that are true by construction (and checked by
``holds``), build hard negatives and Winoground pairs, and split the world so that held-out
color-shape compositions can test compositional generalisation. Explained in notebook 01.
"""

from vlm_primer.world.datasets import SceneDataset, ShapesCaptionDataset, make_collate
from vlm_primer.world.instruct import INSTRUCTION_KINDS, box_text, grounded_caption, instruction, parse_box
from vlm_primer.world.language import (
    CAPTION_KINDS,
    NP,
    Absent,
    Caption,
    Count,
    Exists,
    Relation,
    caption_scene,
    describe,
    holds,
    paraphrases,
    realize,
    referring_np,
)
from vlm_primer.world.mosaic import MosaicVQADataset, render_mosaic, spread_scene
from vlm_primer.world.negatives import NEGATIVE_KINDS, hard_negative, hard_negatives
from vlm_primer.world.render import boxes, object_coverage, render, render_batch, render_numpy, visible_fractions
from vlm_primer.world.scene import Obj, Scene, WorldConfig, clear_relations, relation_holds, sample_scene
from vlm_primer.world.splits import DEFAULT_HELD_OUT, SPLITS, split_rng, split_scene
from vlm_primer.world.tasks import ShapesInstructDataset, ShapesPOPEDataset, ShapesVQADataset, export_webdataset
from vlm_primer.world.vocab import COLORS, RELATIONS, SHAPES, SIZES, TEXTURES, world_words
from vlm_primer.world.vqa import (POPE_SETTINGS, QUESTION_TYPES, BlindPrior, PopeStats, Question, accuracy_by_type, ask,
                                  ask_any, blind_prior, pope_probes)
from vlm_primer.world.winoground import WinogroundPair, same_words, winoground_pair

__all__ = [
    "INSTRUCTION_KINDS", "POPE_SETTINGS", "QUESTION_TYPES", "BlindPrior", "MosaicVQADataset", "PopeStats", "Question",
    "SceneDataset",
    "ShapesInstructDataset", "ShapesPOPEDataset", "ShapesVQADataset", "accuracy_by_type", "ask", "ask_any",
    "blind_prior", "box_text", "export_webdataset", "grounded_caption", "instruction", "parse_box", "pope_probes",
    "CAPTION_KINDS", "COLORS", "DEFAULT_HELD_OUT", "NEGATIVE_KINDS", "NP", "RELATIONS", "SHAPES", "SIZES",
    "SPLITS", "TEXTURES", "Absent", "Caption", "Count", "Exists", "Obj", "Relation", "Scene",
    "ShapesCaptionDataset", "WinogroundPair", "WorldConfig", "boxes", "caption_scene", "clear_relations",
    "describe", "hard_negative", "hard_negatives", "holds", "make_collate", "object_coverage", "paraphrases",
    "realize", "referring_np", "relation_holds", "render", "render_batch", "render_mosaic", "render_numpy",
    "same_words", "sample_scene", "split_rng", "split_scene", "spread_scene", "visible_fractions", "winoground_pair",
    "world_words",
]
