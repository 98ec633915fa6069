"""Config dataclasses with named presets.

Every model is a config dataclass plus an ``nn.Module``. A config class lists its presets in a
``PRESETS`` class attribute (a dict from name to field overrides) and gets ``from_preset``::

    @dataclass
    class ViTConfig(PresetConfig):
        dim: int = 64
        ...
        PRESETS: ClassVar[dict] = {"tiny": dict(dim=64), "base": dict(dim=768)}

    ViTConfig.from_preset("tiny", depth=3)   # preset, then overrides
    ViTConfig.from_preset()                  # the preset named by VLM_PRIMER_SCALE

Every config checks itself when it is built: each field against its annotation and the class's
``BOUNDS`` (:func:`vlm_primer.validate.check_fields`), then the cross-field rules of ``validate()``
(divisibility, choices). A bad value fails at once with the class and field in the message.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from vlm_primer.utils import get_scale
from vlm_primer.validate import check_fields


@dataclasses.dataclass
class PresetConfig:
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # Ranges of numeric fields: ">0", ">=0", "[0, 1)", "[0, 1]", ... (None values are not checked).
    BOUNDS: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        check_fields(self)
        self.validate()

    def validate(self) -> None:
        """Rules that involve several fields (divisibility, choices); subclasses extend it."""

    @classmethod
    def presets(cls) -> tuple[str, ...]:
        return tuple(cls.PRESETS)

    @classmethod
    def from_preset(cls, name: str | None = None, **overrides: Any):
        """Build the named preset (default: the ``VLM_PRIMER_SCALE`` one), then apply overrides.

        An override replaces a field whole, a nested part too: ``vision=dict(depth=6)`` is a ViT of the defaults
        with depth 6, not the preset's tower with depth 6. To change one field of a part, start from the preset's:
        ``vision=dict(cls.PRESETS[name]["vision"], depth=6)``, or ``.replace`` the built config's part."""
        name = get_scale() if name is None else name
        if name not in cls.PRESETS:
            raise ValueError(f"unknown preset {name!r} for {cls.__name__}; choose one of {cls.presets()}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {unknown}; fields are {sorted(fields)}")
        return cls(**{**cls.PRESETS[name], **overrides})

    def coerce_parts(self, **classes: type) -> None:
        """Turn the fields named in ``classes`` (a model's parts: ``vision=ViTConfig``, ...) from dicts of fields
        into those configs; a part of any other type is a ``TypeError``."""
        for name, cls in classes.items():
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"{type(self).__name__}.{name} must be a {cls.__name__} (or a dict of its fields), "
                                f"got {type(getattr(self, name)).__name__}")

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
