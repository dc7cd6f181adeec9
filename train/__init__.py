"""SAEHD training: config, model, losses, optimizers, data sampler, loop, checkpoints and history."""
