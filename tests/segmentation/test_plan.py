import pytest

from ratgan.errors import RatganError
from ratgan.segmentation.plan import TESTS, Split, build_plan, make_split, synthetic_needed

PAPER_COUNTS = {  # test: (real, synthetic) for 174 real training scans
    1: (174, 0),
    2: (174, 87),
    3: (174, 174),
    4: (174, 261),
    5: (174, 348),
    6: (0, 174),
    7: (0, 348),
    8: (87, 174),
    9: (87, 348),
    10: (174, 0),
}


def test_ten_tests_with_the_papers_counts():
    split = Split(train=list(range(174)), val=list(range(174, 205)), test=list(range(205, 244)))
    plans = build_plan(split, n_synthetic=synthetic_needed(174), seed=0)
    assert [p.number for p in plans] == list(range(1, 11)) == [t.number for t in TESTS]
    for p in plans:
        assert (len(p.real), len(p.synthetic)) == PAPER_COUNTS[p.number]
        assert p.augment == (p.number == 10)
    assert synthetic_needed(174) == 348


@pytest.mark.parametrize("n", [60, 61, 174, 23])
@pytest.mark.parametrize("seed", [0, 1])
def test_scaled_plan_never_trains_on_a_test_scan(n, seed):
    split = make_split(n, seed=5)
    assert set(split.train) | set(split.val) | set(split.test) == set(range(n))
    assert len(split.train) + len(split.val) + len(split.test) == n
    r = len(split.train)
    plans = build_plan(split, synthetic_needed(r), seed)
    held_out = set(split.test) | set(split.val)
    half = (r + 1) // 2
    want = {
        1: (r, 0),
        2: (r, half),
        3: (r, r),
        4: (r, (3 * r + 1) // 2),
        5: (r, 2 * r),
        6: (0, r),
        7: (0, 2 * r),
        8: (half, r),
        9: (half, 2 * r),
        10: (r, 0),
    }
    by = {p.number: p for p in plans}
    for p in plans:
        assert (len(p.real), len(p.synthetic)) == want[p.number]
        assert not held_out & set(p.real)
        assert len(set(p.real)) == len(p.real) and len(set(p.synthetic)) == len(p.synthetic)
    # a larger synthetic share contains the smaller one; tests 8 and 9 share their half of R
    assert set(by[2].synthetic) <= set(by[3].synthetic) <= set(by[5].synthetic)
    assert by[8].real == by[9].real and set(by[8].real) <= set(split.train)


def test_seeds_change_subsets_but_not_the_split():
    split = make_split(60, seed=0)
    a, b = build_plan(split, 100, 0), build_plan(split, 100, 1)
    assert a[7].real != b[7].real or a[2].synthetic != b[2].synthetic
    assert make_split(60, seed=0) == split


def test_too_few_synthetic_scans_is_a_user_error():
    split = make_split(60, seed=0)
    with pytest.raises(RatganError, match="synthetic"):
        build_plan(split, 10, 0)
    # a subset of tests needs fewer
    assert len(build_plan(split, 10, 0, tests=[1, 10])) == 2
