"""The ten tests of the paper's Table 4 (docs/method.md section 6), scaled to the user's real set.

The real labelled scans are split once into a test split (scored, never trained on), a
validation split (early stopping for every test) and the real training split R.  With
|R| = r (174 in the paper), the tests are

    1 r          2 r + s(r/2)   3 r + s(r)   4 r + s(3r/2)   5 r + s(2r)
    6 s(r)       7 s(2r)        8 r/2 + s(r) 9 r/2 + s(2r)   10 r with conventional augmentation

Per seed, the synthetic scans of a test are the first k of one permutation of the synthetic
pool (so a larger synthetic share contains the smaller ones) and r/2 is a random half of R.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ratgan.errors import RatganError


@dataclass(frozen=True)
class TestSpec:
    """One row of the paper's Table 4 in units of the real training split R."""

    number: int
    real_halves: int
    """Real training scans as multiples of |R|/2: 2 = all of R, 1 = half, 0 = none."""
    synth_halves: int
    """Synthetic scans as multiples of |R|/2."""
    augment: bool = False
    paper: str = ""
    """The paper's name of the data set (r174 + s87 ...)."""


TESTS: tuple[TestSpec, ...] = (
    TestSpec(1, 2, 0, False, "r174"),
    TestSpec(2, 2, 1, False, "r174+s87"),
    TestSpec(3, 2, 2, False, "r174+s174"),
    TestSpec(4, 2, 3, False, "r174+s261"),
    TestSpec(5, 2, 4, False, "r174+s348"),
    TestSpec(6, 0, 2, False, "s174"),
    TestSpec(7, 0, 4, False, "s348"),
    TestSpec(8, 1, 2, False, "r87+s174"),
    TestSpec(9, 1, 4, False, "r87+s348"),
    TestSpec(10, 2, 0, True, "r174+aug"),
)


def halves(k: int, r: int) -> int:
    """k * r / 2 rounded half up (87 for k=1, r=174; 21 for k=1, r=41)."""
    return (k * r + 1) // 2


@dataclass
class Split:
    """Indices into the real set: training split R, validation and test splits (disjoint)."""

    train: list[int]
    val: list[int]
    test: list[int]

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def make_split(
    n: int, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.15
) -> Split:
    """Split ``n`` real labelled scans: ``test_fraction`` of them for testing, then
    ``val_fraction`` of the rest for validation (the paper's 15%), the remainder is R."""
    n_test = max(1, round(test_fraction * n))
    n_val = max(1, round(val_fraction * (n - n_test)))
    if n - n_test - n_val < 2:
        raise RatganError(
            f"the real set holds {n} labelled scans: too few to split into "
            "test, validation and training scans (at least 4 are needed)."
        )
    perm = np.random.default_rng([seed, 1234]).permutation(n)
    test = sorted(int(i) for i in perm[:n_test])
    val = sorted(int(i) for i in perm[n_test : n_test + n_val])
    train = sorted(int(i) for i in perm[n_test + n_val :])
    return Split(train, val, test)


@dataclass
class PlannedTest:
    """The training data of one (test, seed): indices into the real set and synthetic pool."""

    number: int
    seed: int
    real: list[int]
    synthetic: list[int]
    augment: bool
    name: str
    """Scaled name of the data set, e.g. ``r41+s21``."""
    paper: str

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return asdict(self)


def synthetic_needed(n_train: int) -> int:
    """Synthetic scans the plan needs for a real training split of ``n_train`` scans (2R)."""
    return halves(4, n_train)


def _name(n_real: int, n_synth: int, augment: bool) -> str:
    parts = ([f"r{n_real}"] if n_real else []) + ([f"s{n_synth}"] if n_synth else [])
    return "+".join(parts) + ("+aug" if augment else "")


def build_plan(
    split: Split, n_synthetic: int, seed: int, tests: tuple[int, ...] | list[int] | None = None
) -> list[PlannedTest]:
    """The data sets of the ten tests (or of ``tests``) for one seed.

    Raises RatganError when the synthetic pool is smaller than the plan needs.
    """
    r = len(split.train)
    need = synthetic_needed(r)
    wanted = set(tests) if tests else {t.number for t in TESTS}
    unknown = wanted - {t.number for t in TESTS}
    if unknown:
        raise RatganError(f"unknown test numbers {sorted(unknown)}; tests are 1 to 10.")
    specs = [t for t in TESTS if t.number in wanted]
    most = max((halves(t.synth_halves, r) for t in specs), default=0)
    if most > n_synthetic:
        raise RatganError(
            f"the plan needs {most} accepted synthetic scans for {r} real "
            f"training scans but only {n_synthetic} are available "
            f"(all ten tests need {need})."
        )
    rng = np.random.default_rng([seed, 777])
    synth_perm = rng.permutation(n_synthetic)
    half_real = sorted(int(i) for i in rng.choice(split.train, halves(1, r), replace=False))
    plans = []
    for t in specs:
        real = list(split.train) if t.real_halves == 2 else half_real if t.real_halves else []
        synth = sorted(int(i) for i in synth_perm[: halves(t.synth_halves, r)])
        plans.append(
            PlannedTest(
                t.number,
                seed,
                real,
                synth,
                t.augment,
                _name(len(real), len(synth), t.augment),
                t.paper,
            )
        )
    check_plan(plans, split)
    return plans


def check_plan(plans: list[PlannedTest], split: Split) -> None:
    """Raise if a test or validation scan appears in any training set."""
    held_out = set(split.test) | set(split.val)
    for p in plans:
        leak = held_out & set(p.real)
        if leak:
            raise AssertionError(f"test {p.number} trains on held-out real scans {sorted(leak)}")
