#!/usr/bin/env bash
# The wheels the device machine lacks (its image has torch, transformers, einops, pytest, hypothesis, ...; see
# benchmarks/gpu/README.md), downloaded here for Python 3.12 on x86-64 into .whl/ (git-ignored), to be carried.
#     bash benchmarks/gpu/wheels.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
rm -rf .whl && mkdir -p .whl
# webdataset for vlm_primer.training; ipywidgets (+ IPython) for the chapters run as scripts.
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl webdataset braceexpand ipywidgets comm traitlets jupyterlab_widgets widgetsnbextension ipython \
    ipython_pygments_lexers decorator jedi parso matplotlib-inline pexpect ptyprocess prompt_toolkit wcwidth \
    stack_data asttokens executing pure_eval
du -sh .whl && ls .whl
