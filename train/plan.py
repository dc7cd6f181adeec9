"""VRAM preflight (`facesmith train plan`): memory and FLOPs of a config from its layer shapes, no framework.

Every convolution and dense layer of one training step is listed with its input and output sizes
(`layer_table`, the same structure as train/model.py; a test checks its parameter count against the
built model and its FLOPs feed the benchmark's model-FLOPs utilisation). From it:

- weights, their gradients and the optimiser's slots (float32, whatever the compute precision),
- the activations a step keeps for its backward pass, per face pair (in the compute precision:
  half for bfloat16/float16), plus the loss's own full-resolution maps (always float32),
- a fixed allowance for the backend's runtime (CUDA context, cuDNN/XLA workspaces, allocator slack),

and so the largest batch that fits a given memory. The activation model is checked against XLA's own
buffer assignment of the compiled JAX step (`measure_jax_step`) on the CPU; on a GPU the device
script compares it with each backend's measured peak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from train.config import TrainConfig
from train.shape import (
    Architecture,
    ModelShape,
    model_shape,
    patch_discriminator_layers,
)

GIB = 1024 ** 3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SLOTS = {"adabelief": 2, "rmsprop": 1}
# What a backend holds besides the model's tensors: the CUDA context, cuDNN and XLA workspaces and
# allocator slack. A CPU process keeps no such pool; 0.75 GiB is the H200 allowance (to be checked by
# tools/device_check.sh) and is applied to every GPU plan.
RUNTIME_OVERHEAD_GPU = int(0.75 * GIB)
# Tensors a training step keeps per convolution output for the backward pass: the convolution's
# output and its activation's (and, after an Upscale, the depth-to-space copy).
SAVED_PER_CONV = 2.0
# Full-resolution float32 maps the SAEHD loss builds per side and face (masked images, the DSSIM
# window statistics at one or two scales, mask and MSE terms), counted in units of one R×R×3 image.
LOSS_MAPS_PER_SIDE = 24.0


@dataclass(frozen=True)
class Layer:
    """One convolution or dense layer in one pass of a training step (per face)."""

    part: str  # encoder, inter_ab, decoder, ...
    name: str
    kind: str  # conv | dense
    kernel: int
    in_ch: int
    out_ch: int
    out_side: int  # output height = width (1 for dense)
    trainable: bool = True

    @property
    def parameters(self) -> int:
        return self.kernel * self.kernel * self.in_ch * self.out_ch + self.out_ch

    @property
    def flops(self) -> int:
        """Forward multiply-adds × 2 for one face."""
        return 2 * self.out_side * self.out_side * self.kernel * self.kernel * self.in_ch * self.out_ch

    @property
    def out_elements(self) -> int:
        return self.out_side * self.out_side * self.out_ch


def _halve(side: int, times: int) -> int:
    for _ in range(times):
        side = -(-side // 2)
    return side


def _encoder(archi: Architecture, res: int, e: int) -> list[Layer]:
    layers, side, cin = [], res, 3
    chans = [e, 2 * e, 4 * e, 8 * e] + ([8 * e] if archi.t else [])
    for index, cout in enumerate(chans):
        side = _halve(side, 1)
        layers.append(Layer("encoder", f"down_{index}", "conv", 5, cin, cout, side))
        cin = cout
        if archi.t and index == 0:
            layers += [Layer("encoder", f"res_0/conv_{i}", "conv", 3, e, e, side) for i in range(2)]
    if archi.t:
        layers += [Layer("encoder", f"res_1/conv_{i}", "conv", 3, 8 * e, 8 * e, side) for i in range(2)]
    return layers


def _inter(archi: Architecture, name: str, flat: int, ae: int, out: int, lowest: int) -> list[Layer]:
    layers = [Layer(name, "dense_0", "dense", 1, flat, ae, 1),
              Layer(name, "dense_1", "dense", 1, ae, lowest * lowest * out, 1)]
    if not archi.t:
        layers.append(Layer(name, "up", "conv", 3, out, 4 * out, lowest))
    return layers


def _decoder(archi: Architecture, name: str, cin: int, side: int, d: int, m: int) -> list[Layer]:
    layers = []
    chans = [8 * d, 8 * d, 4 * d, 2 * d] if archi.t else [8 * d, 4 * d, 2 * d]
    rgb_side, rgb_in = side, cin
    for index, cout in enumerate(chans):
        layers.append(Layer(name, f"up_{index}", "conv", 3, rgb_in, 4 * cout, rgb_side))
        rgb_side *= 2
        layers += [Layer(name, f"res_{index}/conv_{i}", "conv", 3, cout, cout, rgb_side) for i in range(2)]
        rgb_in = cout
    kernels = [1, 3, 3, 3] if archi.d else [1]
    layers += [Layer(name, f"out_conv_{i}", "conv", k, 2 * d, 3, rgb_side) for i, k in enumerate(kernels)]
    mask_chans = [8 * m, 8 * m, 4 * m, 2 * m] if archi.t else [8 * m, 4 * m, 2 * m]
    if archi.d:
        mask_chans.append(m)
    mask_side, mask_in = side, cin
    for index, cout in enumerate(mask_chans):
        layers.append(Layer(name, f"mask_up_{index}", "conv", 3, mask_in, 4 * cout, mask_side))
        mask_side *= 2
        mask_in = cout
    layers.append(Layer(name, "mask_out_conv", "conv", 1, mask_in, 1, mask_side))
    return layers


def model_parts(shape: ModelShape) -> dict[str, list[Layer]]:
    """Each part's layers (one pass), as train/model.py builds them."""
    archi, res = shape.archi, shape.resolution
    encoder = _encoder(archi, res, shape.e_dims)
    side = _halve(res, 5 if archi.t else 4)
    flat = side * side * encoder[-1].out_ch
    lowest = res // (32 if archi.d else 16)
    code_side = lowest if archi.t else 2 * lowest
    if archi.kind == "liae":
        out = 2 * shape.ae_dims
        return {"encoder": encoder,
                "inter_ab": _inter(archi, "inter_ab", flat, shape.ae_dims, out, lowest),
                "inter_b": _inter(archi, "inter_b", flat, shape.ae_dims, out, lowest),
                "decoder": _decoder(archi, "decoder", 2 * out, code_side, shape.d_dims, shape.d_mask_dims)}
    dims = (shape.ae_dims, code_side, shape.d_dims, shape.d_mask_dims)
    return {"encoder": encoder,
            "inter": _inter(archi, "inter", flat, shape.ae_dims, shape.ae_dims, lowest),
            "decoder_src": _decoder(archi, "decoder_src", *dims),
            "decoder_dst": _decoder(archi, "decoder_dst", *dims)}


def step_passes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """Per part: (passes whose outputs are trained through, passes only run forward) in one step.

    Encoder: src and dst. DF: inter twice, each decoder once for its reconstruction, the src decoder
    again for the swap. LIAE: inter_ab for src and dst, inter_b for dst, the decoder three times. The
    swap is only trained through by the style losses; counted forward-only here.
    """
    if shape.archi.kind == "liae":
        return {"encoder": (2, 0), "inter_ab": (2, 0), "inter_b": (1, 0), "decoder": (2, 1)}
    return {"encoder": (2, 0), "inter": (2, 0), "decoder_src": (1, 1), "decoder_dst": (1, 0)}


@dataclass(frozen=True)
class MemoryPlan:
    """A config's memory and compute per training step; bytes unless named otherwise."""

    archi: str
    resolution: int
    backend: str
    precision: str
    device_kind: str  # "gpu" or "cpu": whether the runtime allowance applies
    batch_size: int
    parameters: int  # SAEHD model
    discriminator_parameters: int
    weights: int  # float32 weights of every network
    gradients: int  # float32 gradients of the trainable ones
    optimizer_state: int  # float32 slots
    compute_copies: int  # weights cast to the compute precision (0 in float32)
    activations_per_sample: int  # what the backward pass keeps for one face pair
    runtime_overhead: int
    total: int  # at batch_size
    flops_per_step: int  # training FLOPs (forward + backward) at batch_size
    memory_available: int | None = None  # the GPU memory asked about
    largest_batch: int | None = None  # the largest batch that fits it (0: not even one)

    @property
    def fixed(self) -> int:
        return self.weights + self.gradients + self.optimizer_state + self.compute_copies + self.runtime_overhead

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _discriminator_parameters(config: TrainConfig, shape: ModelShape) -> int:
    total = 0
    if config.gan_power > 0:
        layers = patch_discriminator_layers(config.effective_gan_patch_size)
        ch = [min(config.gan_dims * 2 ** i, 512) for i in range(len(layers) + 1)]
        n = len(layers)
        total += 3 * ch[0] + ch[0]  # in_conv 1×1
        total += sum(9 * ch[i] * ch[i + 1] + ch[i + 1] for i in range(n))
        total += ch[n] + 1 + ch[n] * ch[n] + ch[n]  # centre heads
        total += sum(9 * (ch[i + 1] if i == n - 1 else 2 * ch[i + 1]) * ch[i] + ch[i] for i in range(n))
        total += 2 * ch[0] + 1
    if config.true_face_power > 0 and shape.archi.kind == "df":
        lowest = shape.resolution // (32 if shape.archi.d else 16)
        code_res = lowest if shape.archi.t else 2 * lowest
        chans = [256 * min(2 ** i, 8) for i in range(1 + code_res // 8)]
        ins = [shape.ae_dims] + chans[:-1]
        total += sum((16 if i == 0 else 9) * cin * cout + cout for i, (cin, cout) in enumerate(zip(ins, chans)))
        total += chans[-1] + 1
    return total


def plan_memory(config: TrainConfig, backend: str = "auto", precision: str | None = None,
                device_kind: str = "gpu", batch_size: int | None = None,
                memory_available: int | None = None) -> MemoryPlan:
    """The memory plan of `config` (its precision and batch unless given) and, with `memory_available`
    (bytes), the largest batch that fits it."""
    shape = model_shape(config)
    precision = precision or config.precision
    batch = batch_size or config.batch_size
    parts = model_parts(shape)
    passes = step_passes(shape)
    parameters = sum(layer.parameters for layers in parts.values() for layer in layers)
    frozen = sum(layer.parameters for layer in parts.get("inter_ab", [])) \
        if shape.archi.kind == "liae" and not config.random_warp else 0
    discriminators = _discriminator_parameters(config, shape)
    weights = 4 * (parameters + discriminators)
    gradients = 4 * (parameters - frozen + discriminators)
    optimizer_state = 4 * SLOTS[config.optimizer] * (parameters + discriminators)
    compute_copies = BYTES[precision] * (parameters + discriminators) if precision != "float32" else 0
    compute_bytes = BYTES[precision]
    saved = 0.0
    flops = 0
    for part, layers in parts.items():
        trained, forward_only = passes[part]
        for layer in layers:
            per_pass = layer.out_elements * (SAVED_PER_CONV + (1.0 if layer.name.startswith(("up", "mask_up")) else 0.0))
            saved += trained * per_pass
            flops += (3 * trained + forward_only) * layer.flops
    image = shape.resolution * shape.resolution * 3
    inputs = 2 * (2 * image + 2 * image // 3) * 4  # input and target images, masks, both sides, float32
    activations = int(saved * compute_bytes + 2 * LOSS_MAPS_PER_SIDE * image * 4 + inputs)
    if config.gan_power > 0:  # the patch discriminator runs at full resolution on real and fake faces
        activations += int(3 * SAVED_PER_CONV * image / 3 * config.gan_dims * 6 * compute_bytes)
    overhead = RUNTIME_OVERHEAD_GPU if device_kind == "gpu" else 0
    fixed = weights + gradients + optimizer_state + compute_copies + overhead
    largest = None
    if memory_available is not None:
        largest = max(0, int((memory_available - fixed) // activations)) if memory_available > fixed else 0
    return MemoryPlan(archi=config.archi, resolution=config.resolution, backend=backend, precision=precision,
                      device_kind=device_kind, batch_size=batch, parameters=parameters,
                      discriminator_parameters=discriminators, weights=weights, gradients=gradients,
                      optimizer_state=optimizer_state, compute_copies=compute_copies,
                      activations_per_sample=activations, runtime_overhead=overhead,
                      total=fixed + batch * activations, flops_per_step=batch * flops,
                      memory_available=memory_available, largest_batch=largest)


def training_flops_per_sample(config: TrainConfig) -> int:
    """Training FLOPs of one face pair (forward + backward of the SAEHD model, no discriminators)."""
    return plan_memory(config, batch_size=1).flops_per_step


def check_fits(plan: MemoryPlan, memory_available: int) -> str | None:
    """A warning when `plan` needs more than `memory_available`, naming the batch that fits; else None."""
    if plan.total <= memory_available:
        return None
    largest = max(0, (memory_available - plan.fixed) // plan.activations_per_sample)
    return (f"batch {plan.batch_size} needs about {plan.total / GIB:.1f} GiB, the device has "
            f"{memory_available / GIB:.1f} GiB: batch {int(largest)} fits"
            + (" (not even batch 1: lower resolution or dims)" if largest == 0 else ""))


def measure_jax_step(trainer: Any, batch: tuple[Any, ...]) -> dict[str, int]:
    """XLA's buffer assignment for the compiled JAX step: argument, output, temporary and aliased bytes
    (its peak is about argument + output + temp − alias). Needs the jax backend."""
    from train.gradients import lowered_jax_step

    analysis = lowered_jax_step(trainer, batch).compile().memory_analysis()
    return {"argument": int(analysis.argument_size_in_bytes), "output": int(analysis.output_size_in_bytes),
            "temp": int(analysis.temp_size_in_bytes), "alias": int(analysis.alias_size_in_bytes)}


def describe(plan: MemoryPlan) -> list[tuple[str, str]]:
    """Rows for the CLI table."""
    def gib(value: int) -> str:
        return f"{value / GIB:.2f} GiB"

    rows = [("model", f"{plan.archi} {plan.resolution} px, {plan.parameters / 1e6:.1f} M parameters"
             + (f" + {plan.discriminator_parameters / 1e6:.2f} M discriminator" if plan.discriminator_parameters else "")),
            ("backend, precision", f"{plan.backend}, {plan.precision}"),
            ("weights", gib(plan.weights)), ("gradients", gib(plan.gradients)),
            ("optimiser state", gib(plan.optimizer_state)),
            ("compute-precision copies", gib(plan.compute_copies)),
            ("activations per face pair", gib(plan.activations_per_sample)),
            ("runtime allowance", gib(plan.runtime_overhead)),
            (f"total at batch {plan.batch_size}", gib(plan.total)),
            ("training FLOPs per step", f"{plan.flops_per_step / 1e12:.2f} TFLOP")]
    if plan.memory_available is not None:
        rows.append((f"largest batch in {plan.memory_available / GIB:.0f} GiB", str(plan.largest_batch)))
    return rows


__all__ = ["GIB", "Layer", "MemoryPlan", "check_fits", "describe", "measure_jax_step", "model_parts",
           "plan_memory", "step_passes", "training_flops_per_sample"]
