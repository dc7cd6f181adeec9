"""The VRAM plan: its layer table against the built model, the memory arithmetic, the CLI progress line."""

from __future__ import annotations

import numpy as np
import pytest

from train.config import resolve_config
from train.plan import GIB, check_fits, model_parts, plan_memory
from train.shape import expected_parameter_counts, model_shape

ARCHIS = ["df", "liae", "df-ud", "liae-ud", "liae-udt", "df-udtc"]


@pytest.mark.parametrize("archi", ARCHIS)
def test_the_layer_table_has_the_built_model_s_parameters(archi):
    from train.model import SAEHDModel

    config, _ = resolve_config({"archi": archi, "resolution": 64, "ae_dims": 32, "e_dims": 16, "d_dims": 16})
    shape = model_shape(config)
    parts = model_parts(shape)
    built = SAEHDModel(shape, seed=0).variables_by_part()
    for part, layers in parts.items():
        assert sum(layer.parameters for layer in layers) == expected_parameter_counts(shape)[part]
        assert sum(int(np.prod(v.shape)) for v in built[part].values()) == expected_parameter_counts(shape)[part]
        # one conv or dense layer in the table per kernel in the model
        assert len(layers) == sum(name.endswith("/kernel") for name in built[part])


def test_memory_adds_up_and_precision_halves_the_activations():
    config, _ = resolve_config({"resolution": 256})
    full = plan_memory(config, precision="float32", batch_size=8)
    half = plan_memory(config, precision="bfloat16", batch_size=8)
    assert full.weights == 4 * full.parameters and full.optimizer_state == 2 * full.weights  # AdaBelief: m, v
    assert half.compute_copies == 2 * half.parameters and full.compute_copies == 0
    assert 0.5 < half.activations_per_sample / full.activations_per_sample < 0.75  # the loss maps stay float32
    assert full.total == full.fixed + 8 * full.activations_per_sample
    assert plan_memory(config, batch_size=16).flops_per_step == 2 * full.flops_per_step
    rmsprop = plan_memory(resolve_config({"resolution": 256, "optimizer": "rmsprop"})[0])
    assert rmsprop.optimizer_state == rmsprop.weights
    frozen = plan_memory(resolve_config({"resolution": 256, "phase": "lrd"})[0])  # inter_ab frozen
    assert frozen.gradients < full.gradients


def test_check_fits_names_a_batch_that_fits():
    config, _ = resolve_config({"resolution": 256, "batch_size": 64})
    plan = plan_memory(config)
    assert check_fits(plan, int(plan.total + 1)) is None
    message = check_fits(plan, 6 * GIB)
    largest = plan_memory(config, memory_available=6 * GIB).largest_batch
    assert message and f"batch {largest} fits" in message and 0 < largest < 64


def test_progress_line_shows_ms_and_an_eta():
    from facesmith.cmd_train import progress_line

    line = progress_line("rw", 100, [200.0, 220.0, 210.0], 0.5, 0.25, 3700)
    assert "iteration 100/3700" in line and "210 ms/it" in line and "ETA 12:36" in line
    assert "ETA 1:00:00" in progress_line("lrd", 0, [1000.0], 0.5, 0.25, 3600)
    assert "ETA" not in progress_line("rw", 5, [100.0], 0.5, 0.25, None)
