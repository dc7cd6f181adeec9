"""Fast image reduction: exact sizes, coordinates that map back, and no aliasing."""

from __future__ import annotations

import numpy as np
import pytest

from curate.faces.resample import reduce_image


@pytest.mark.parametrize("source, size", [((1080, 1920), (640, 360)), ((1001, 757), (640, 484)),
                                          ((700, 500), (457, 640)), ((64, 64), (64, 64))])
def test_output_has_the_asked_size(source, size):
    image = np.zeros((*source, 3), np.uint8)
    reduced, factors = reduce_image(image, size)
    assert reduced.shape == (size[1], size[0], 3)
    assert factors[0] == pytest.approx(size[0] / source[1], rel=0.01)


@pytest.mark.parametrize("source", [(1080, 1920), (1001, 1517), (977, 733)])
def test_a_point_lands_where_the_factors_say(source):
    """A bright 9×9 square's centroid after reduction is its centre times the factors."""
    height, width = source
    image = np.zeros(source, np.float32)
    x, y = width * 0.37, height * 0.61
    image[round(y) - 4 : round(y) + 5, round(x) - 4 : round(x) + 5] = 1.0
    size = (round(width * 640 / max(source)), round(height * 640 / max(source)))
    reduced, (fx, fy) = reduce_image(image, size)
    rows, columns = np.mgrid[: reduced.shape[0], : reduced.shape[1]]
    weight = reduced.sum()
    # pixel centres sit at index + 0.5 in the continuous frame the factors scale
    centroid = ((columns + 0.5) * reduced).sum() / weight, ((rows + 0.5) * reduced).sum() / weight
    expected = (round(x) + 0.5) * fx, (round(y) + 0.5) * fy
    assert np.hypot(centroid[0] - expected[0], centroid[1] - expected[1]) < 0.5


def test_fine_detail_averages_out_instead_of_aliasing():
    """A one-pixel checkerboard reduced 2× or 3.3× is near flat grey (a 3×3 box leaves 4/9 against
    5/9); sampling it would keep pure black and white (standard deviation 127.5)."""
    checker = ((np.indices((960, 1440)).sum(axis=0) % 2) * 255).astype(np.uint8)
    for size, flatness in (((720, 480), 1.0), ((432, 288), 20.0)):
        reduced, _ = reduce_image(checker, size)
        assert abs(float(reduced.mean()) - 127.5) < 2
        assert float(reduced.std()) < flatness


def test_enlarging_is_refused():
    with pytest.raises(ValueError, match="cannot reduce"):
        reduce_image(np.zeros((10, 10), np.uint8), (20, 5))
