"""The recipe registry and ``python -m vlm_primer.train`` (in-process; the torchrun run is in
test_distributed_ddp.py and the shard run in test_webdataset_shards.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))

from vlm_primer.train import build_parser, config_overrides, main  # noqa: E402
from vlm_primer.training.recipes import get_recipe, register_recipe  # noqa: E402


def test_list_and_unknown_recipe(capsys):
    main(["--list", "--recipe-module", "toy_training"])
    assert "toy_mlp" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown recipe 'nope'.*toy_mlp"):
        get_recipe("nope", ["toy_training"])


def test_register_recipe_rejects_clashes():
    @register_recipe("test_clash_recipe")
    def first(args):
        raise AssertionError

    with pytest.raises(ValueError, match="already registered"):
        @register_recipe("test_clash_recipe")
        def second(args):
            raise AssertionError

    with pytest.raises(ValueError, match="recipe name"):
        register_recipe("bad name!")


def test_flags_map_to_config_fields_only_when_given():
    ns = build_parser().parse_args(["x", "--steps", "7", "--grad-clip", "0", "--precision", "bf16", "--compile",
                                    "--resume"])
    o = config_overrides(ns)
    assert o["max_steps"] == 7 and o["grad_clip"] is None and o["precision"] == "bf16" and o["compile"] is True
    assert o["resume"] is True and "lr" not in o and "batch_size" not in o
    assert config_overrides(build_parser().parse_args(["x", "--resume", "auto"]))["resume"] == "auto"
    assert config_overrides(build_parser().parse_args(["x", "--compile-mode", "reduce-overhead"]))["compile"] == \
        "reduce-overhead"
    assert "compile" not in config_overrides(build_parser().parse_args(["x"]))
    assert config_overrides(build_parser().parse_args(["x"]))["num_workers"] == "auto"
    assert config_overrides(build_parser().parse_args(["x", "--num-workers", "3"]))["num_workers"] == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["x", "--num-workers", "some"])


def test_cli_trains_the_toy_recipe(tmp_path, capsys):
    history = main(["toy_mlp", "--recipe-module", "toy_training", "--steps", "3", "--batch-size", "4",
                    "--grad-accum", "2", "--ckpt-dir", str(tmp_path / "ck"), "--no-progress"])
    assert [h["step"] for h in history] == [1, 2, 3]
    assert (tmp_path / "ck" / "step_00000003" / "trainer_state.json").is_file()
    assert "checkpoints in" in capsys.readouterr().out


def test_each_recipe_is_found_in_its_own_module_only():
    from vlm_primer.training.recipes import RECIPE_MODULES, available_recipes

    assert {name: r.module for name, r in available_recipes().items() if r.module.startswith("vlm_primer.")} \
        == RECIPE_MODULES
    # a fresh process that asks for llava imports the backbones' recipes, not the video package
    code = ("import sys; from vlm_primer.training.recipes import get_recipe; get_recipe('llava'); "
            "print(sorted(m for m in sys.modules if m.startswith(('vlm_primer.video', 'vlm_primer.backbones.recipes'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "['vlm_primer.backbones.recipes']"
