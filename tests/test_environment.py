"""environment.yml (conda users) lists exactly the packages of pyproject.toml."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for name, deps in project["optional-dependencies"].items():
        wanted |= {d for d in deps if not d.startswith("vlm-primer")}
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("  - pip:")
    listed = {ln.strip()[2:] for ln in lines[start + 1:] if ln.strip().startswith("- ")}
    listed.discard("-e .")
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"


def test_no_cuda_heavy_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    names = {d.split("=")[0].split(">")[0].split("<")[0].split("[")[0].lower() for d in deps}
    assert not names & {"torchvision", "torchaudio", "open_clip_torch", "open-clip-torch"}
    assert "torch==2.13.0" in deps, "torch is pinned to the local CPU build"
