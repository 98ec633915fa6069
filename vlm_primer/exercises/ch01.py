"""Checks for the exercises of chapter 01 (Shapes World). Explained in notebook 01, §Exercises."""

from __future__ import annotations

import numpy as np

from vlm_primer.exercises import Wrong, exercise


@exercise("01.1", "Decide a spatial relation from the scene graph")
def relation(fn) -> None:
    from vlm_primer.world import Obj, relation_holds

    rng = np.random.default_rng(0)
    for _ in range(200):
        a = Obj("circle", "red", x=float(rng.uniform()), y=float(rng.uniform()))
        b = Obj("square", "blue", x=float(rng.uniform()), y=float(rng.uniform()))
        for rel in ("left", "right", "above", "below"):
            want = relation_holds(a, b, rel, 0.1)
            got = bool(fn(a, b, rel, 0.1))
            if got != want:
                flipped = relation_holds(a, b, {"above": "below", "below": "above"}.get(rel, rel), 0.1)
                if rel in ("above", "below") and got == flipped:
                    raise Wrong("image rows grow downwards: 'above' means a smaller y")
                if got == relation_holds(a, b, rel, 0.0):
                    raise Wrong("a relation only holds when the offset is larger than the margin")
                raise Wrong(f"wrong for {a.describe()} at ({a.x:.2f}, {a.y:.2f}) {rel} of a square at ({b.x:.2f}, {b.y:.2f})")


@exercise("01.2", "Recognise a Winoground pair")
def winoground(fn) -> None:
    cases = [
        ("a red circle left of a blue square", "a blue circle left of a red square", True),
        ("a red circle left of a blue square", "a red square left of a blue circle", True),
        ("a red circle left of a blue square", "a red circle left of a green square", False),
        ("a red circle and a red square", "a red circle and a square", False),
        ("a red red circle", "a red circle circle", False),
        ("a circle left of a square", "a circle felt of a square", False),  # same letters, other words
    ]
    for a, b, want in cases:
        got = bool(fn(a, b))
        if got != want:
            if a.split()[3:] and not want and set(a.split()) == set(b.split()):
                raise Wrong(f"{a!r} / {b!r}: compare word counts, not just the set of words")
            raise Wrong(f"{a!r} / {b!r} should give {want}")


@exercise("01.3", "Draw a held-out split")
def held_out(fn) -> str:
    from vlm_primer.world import COLORS, DEFAULT_HELD_OUT, SHAPES

    got = fn(COLORS, SHAPES, DEFAULT_HELD_OUT)
    if not isinstance(got, (list, tuple, set)):
        raise Wrong(f"return the training compositions as a list of (color, shape), got {type(got).__name__}")
    got = set(map(tuple, got))
    if got & set(DEFAULT_HELD_OUT):
        raise Wrong("a held-out composition is still among the training ones")
    if len(got) != len(COLORS) * len(SHAPES) - len(DEFAULT_HELD_OUT):
        raise Wrong(f"expected {len(COLORS)} × {len(SHAPES)} − {len(DEFAULT_HELD_OUT)} compositions, got {len(got)}")
    seen_colors, seen_shapes = {c for c, _ in got}, {s for _, s in got}
    if seen_colors != set(COLORS) or seen_shapes != set(SHAPES):
        raise Wrong("every colour and every shape must still occur in training")
    return "each held-out pair is new as a pair, while its colour and its shape were both seen"


@exercise("01.4", "Anti-aliased coverage of a disc")
def coverage(fn) -> None:
    for size, (cx, cy, r) in ((16, (8.0, 8.0, 5.0)), (24, (7.3, 12.9, 4.2)), (9, (4.5, 4.5, 2.0))):
        ys, xs = np.mgrid[0:size, 0:size] + 0.5               # pixel centres
        sdf = np.hypot(xs - cx, ys - cy) - r
        want = np.clip(0.5 - sdf, 0.0, 1.0)
        got = np.asarray(fn(cx, cy, r, size), dtype=np.float64)
        if got.shape != (size, size):
            raise Wrong(f"return a ({size}, {size}) array, got shape {got.shape}")
        if np.allclose(got, (sdf < 0).astype(float)):
            raise Wrong("a hard 0/1 threshold aliases the edge: ramp the coverage over one pixel, 0.5 - sdf clipped to [0, 1]")
        ys0, xs0 = np.mgrid[0:size, 0:size]
        if np.allclose(got, np.clip(0.5 - (np.hypot(xs0 - cx, ys0 - cy) - r), 0, 1)):
            raise Wrong("pixel (i, j) covers [j, j+1) × [i, i+1): measure from its centre, (j + 0.5, i + 0.5)")
        if not np.allclose(got, want, atol=1e-6):
            raise Wrong(f"disc at ({cx}, {cy}), radius {r}, in a {size}x{size} image: the coverage is off")


@exercise("01.5", "A blind baseline for visual questions")
def blind_baseline(fn) -> str:
    import collections

    from vlm_primer.world import ShapesVQADataset

    train = [ShapesVQADataset("train", 1500).question(i) for i in range(1500)]
    test = [ShapesVQADataset("val", 600).question(i) for i in range(600)]

    def most_common(answers) -> str:  # ties: the answer seen first (Counter.most_common keeps insertion order)
        return collections.Counter(answers).most_common(1)[0][0]

    by_text = collections.defaultdict(list)
    for q in train:
        by_text[q.question].append(q.answer)
    overall = most_common(q.answer for q in train)
    want = np.mean([most_common(by_text[q.question]) == q.answer if q.question in by_text else overall == q.answer
                    for q in test])
    got = fn([(q.question, q.answer) for q in train], [(q.question, q.answer) for q in test])
    if not isinstance(got, (float, int, np.floating)) or not 0.0 <= got <= 1.0:
        raise Wrong(f"return the accuracy as a number in [0, 1], got {got!r}")
    if abs(got - np.mean([q.answer == overall for q in test])) < 1e-9 and abs(got - want) > 1e-9:
        raise Wrong("that is the most frequent answer overall: use the answers seen for the same question text")
    if abs(got - want) > 1e-9:
        raise Wrong("the accuracy is off: the most frequent answer for the same question text (ties: the one seen "
                    "first), and for a question never seen the most frequent answer overall")
    return f"{got:.1%} without looking at a single image"
