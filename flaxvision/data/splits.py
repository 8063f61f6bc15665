"""Train / validation / test splits: predefined ones are kept, missing ones are carved out.

Rules (params ``preprocess.val_fraction``, ``test_fraction``, ``split_seed``):

* a split the dataset defines is used as it is;
* no test split: a seeded, stratified ``test_fraction`` of the validation split if the
  dataset has one, else of train;
* no validation split: a seeded, stratified ``val_fraction`` of train.

When both come from train, each fraction is of the whole of train (0.2 and 0.2 leave 60%).

How each dataset ends up split:

==============  ==========================  ================================  ==========================
dataset         train                       validation                        test
==============  ==========================  ================================  ==========================
cats_vs_dogs    train/ (2000)               validation/ minus test            20% of validation/ (the
                                                                              seed takes 1/5 of it too)
belgiumtsc      Training/ minus validation  20% of Training/ (as the seed)    Testing/
signs           train_signs.h5 minus val.   20% of train_signs.h5             test_signs.h5
dog_breeds      train/ minus val. and test  20% of train/                     20% of train/
folder:<path>   train/ (or the class        validation/ or val/, else 20%     test/, else 20% of
                folders themselves)         of train                          validation, else of train
tfds:<name>     split ``train``             ``validation``, else 20% of       ``test``, else 20% of
                                            train                             validation, else of train
==============  ==========================  ================================  ==========================

The percentages are the defaults in params.yaml. ``dataset.json`` states, for every split,
where it came from (``split_sources``).

Too small to mean much: a class without training images, or with fewer than two validation or
test images, is a warning (one line per split, in report.json too) naming the classes and the
fraction to raise or lower (``thin_class_warnings``); the stage still succeeds.
"""

import dataclasses

import numpy as np

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """Which decoded images form a final split: rows ``indices`` of predefined split ``source``."""

    source: str
    indices: np.ndarray
    description: str


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions of ``labels`` into (kept, held out), holding out ``fraction`` of each class.

    The held-out total is round(fraction * n), shared among classes in proportion to their
    sizes (largest remainders first); then every class with at least two members gets at
    least one member on each side, which can add a few to the total. Same labels and seed,
    same split. Both index arrays are sorted.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = fraction * counts
    held = np.floor(quota).astype(int)
    missing = int(round(fraction * len(labels))) - held.sum()
    if missing > 0:
        # Ties between equal remainders are broken at random, but reproducibly.
        order = np.lexsort((rng.random(len(classes)), -(quota - held)))
        held[order[:missing]] += 1
    held = np.where(counts >= 2, np.clip(held, 1, counts - 1), held)
    parts = [rng.permutation(np.flatnonzero(labels == cls))[:n] for cls, n in zip(classes, held, strict=True)]
    held_out = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held_out)
    return kept, held_out


def plan_splits(
    labels: dict[str, np.ndarray],
    origins: dict[str, str],
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, SplitPlan]:
    """Final train/validation/test from the predefined splits' labels (rules: module docstring)."""
    plans = {name: SplitPlan(name, np.arange(len(labels[name])), origins[name]) for name in labels}
    # predefined split -> [(missing split, fraction of the predefined split)]
    carve: dict[str, list[tuple[str, float]]] = {}
    if "test" not in plans:
        parent = "validation" if "validation" in plans else "train"
        carve.setdefault(parent, []).append(("test", test_fraction))
    if "validation" not in plans:
        carve.setdefault("train", []).append(("validation", val_fraction))
    for parent, children in carve.items():
        whole = plans[parent]
        rest = whole.indices
        for name, fraction in children:
            # Both fractions are of the whole parent, even when the second is taken from what is left.
            share = fraction * len(whole.indices) / len(rest)
            kept, held = stratified_split(labels[parent][rest], share, seed)
            how = f"{fraction * 100:g}% of {whole.description}, stratified, seed {seed}"
            plans[name] = SplitPlan(parent, rest[held], how)
            rest = rest[kept]
        taken = " and ".join(name for name, _ in children)
        plans[parent] = SplitPlan(parent, rest, f"{whole.description} minus {taken}")
    return {name: plans[name] for name in SPLITS}


# A validation or test score per class means little below this many images of the class (one
# image scores 0 or 100%); a class without training images cannot be learnt at all.
MIN_IMAGES = {"train": 1, "validation": 2, "test": 2}
FRACTION_PARAMS = {"validation": "preprocess.val_fraction", "test": "preprocess.test_fraction"}
SHOWN_CLASSES = 5  # classes named in a warning; the others are counted


def thin_class_warnings(
    per_class: dict[str, dict[str, int]],
    plans: dict[str, SplitPlan],
    origins: dict[str, str],
    fractions: dict[str, float],
) -> list[str]:
    """One line per split with classes below MIN_IMAGES: which, how many, and what to change.

    ``per_class``: split -> class -> images; ``origins``: predefined split -> where it came from
    (as for plan_splits); ``fractions``: split -> the value of its FRACTION_PARAMS.
    """
    lines = []
    for name, counts in per_class.items():
        plan, least = plans[name], MIN_IMAGES[name]
        thin = {cls: n for cls, n in counts.items() if n < least}
        if not thin:
            continue
        shown = ", ".join(f"{cls} {n}" for cls, n in list(thin.items())[:SHOWN_CLASSES])
        more = f" and {len(thin) - SHOWN_CLASSES} more" if len(thin) > SHOWN_CLASSES else ""
        problem = (
            "no image, so the model cannot learn them"
            if name == "train"
            else f"fewer than {least} images, so their scores mean little"
        )
        add = f"add images to {origins[plan.source]}"
        if plan.source != name:  # carved out of another split: a larger share helps
            fix = f"raise {FRACTION_PARAMS[name]} (now {fractions[name]:g}) or {add}"
        else:  # predefined: what is carved out of it takes images away
            taken = [FRACTION_PARAMS[s] for s in FRACTION_PARAMS if s != name and plans[s].source == name]
            fix = add + (f" or lower {' and '.join(taken)}" if taken else "")
        lines.append(
            f"{name} split ({plan.description}): {len(thin)} of {len(counts)} classes have "
            f"{problem} ({shown}{more}): {fix}"
        )
    return lines
