"""Building blocks for the SAEHD networks on Keras 3: seeded conv/dense layers, activations, named variables.

Written once with `keras.ops` and `keras.Variable`, so the same layers run on TensorFlow, JAX and torch.
Everything is NHWC (channels last): TensorFlow's CPU convolutions only implement it, XLA lays out
convolutions for the GPU itself, and Keras hands torch an NCHW view of NHWC memory, which is torch's
channels-last memory format. One weight layout on every backend and device.

Layers are small Python objects (`Module`) whose `keras.Variable` attributes are float32 weights. Each
layer is given its full slash path (``"encoder/down_0/conv"``); ``named_variables`` derives the same
names (``<path>/kernel``, ``<path>/bias``) from the object tree, and checkpoints use them. Initial
values are TensorFlow's stateless Philox draw keyed by (seed, variable name), reproduced bit for bit in
numpy (train/philox.py): the same on every backend, whatever the build order, and what TensorFlow-only
facesmith drew for the same seed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from train.backend import import_keras
from train.philox import stateless_uniform

keras = import_keras()
ops = keras.ops

Tensor = Any  # a backend tensor (tf.Tensor, jax.Array or torch.Tensor)
Activation = Callable[[Tensor], Tensor]

_PADDINGS = ("SAME", "VALID")


def to_host(value: Any) -> np.ndarray:
    """A tensor or variable value as a numpy array on the host.

    Not `keras.ops.convert_to_numpy`: it calls `np.array` on TensorFlow variables and torch tensors,
    whose `__array__` takes no `copy` argument, and numpy 2 warns on every call (thousands a run).
    """
    if isinstance(value, (np.ndarray, np.generic, float, int)):
        return np.asarray(value)
    backend = keras.backend.backend()
    # A copy, as convert_to_numpy makes: torch's .numpy() shares the variable's memory, and the
    # next step updates it in place (a checkpoint would hold later weights than its iteration's).
    if backend == "tensorflow":
        return np.array(value.numpy(), copy=True)
    if backend == "torch":
        value = value.detach()
        if value.device.type != "cpu":
            value = value.cpu()
        if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16: through float32 to ml_dtypes'
            import ml_dtypes

            return value.float().numpy().astype(ml_dtypes.bfloat16)
        return np.array(value.numpy(), copy=True)
    return np.asarray(value)


def _derived_seed(seed: int, key: str) -> tuple[int, int]:
    """A (2,) stateless-RNG seed from the model seed and a variable name (a cryptographic hash, not
    Python's salted one, so it is the same in every process)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=16).digest()
    return tuple(int.from_bytes(digest[i:i + 8], "little", signed=True) for i in (0, 8))


def glorot_uniform(shape: Sequence[int], fan_in: int, fan_out: int, seed: int, key: str) -> np.ndarray:
    """Glorot-uniform values, U(-l, l) with l = sqrt(6 / (fan_in + fan_out)), float32 numpy of ``shape``.

    TensorFlow's stateless Philox draw for (seed, name), reproduced in numpy (train/philox.py): the
    weights TensorFlow-only facesmith built for a seed, now on every backend.
    """
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return stateless_uniform(shape, _derived_seed(seed, key), -limit, limit)


def make_variable(value: np.ndarray, path: str, trainable: bool = True) -> Any:
    """A float32 keras.Variable holding `value`, named after `path` (Keras names take no slashes).

    Under a tf.distribute strategy every replica computes the same update from the averaged gradients,
    so replica 0's value is the one to keep: "only_first_replica" lets a replica assign it directly
    (elsewhere the setting changes nothing).
    """
    return keras.Variable(value, dtype="float32", trainable=trainable, name=path.replace("/", "."),
                          aggregation="only_first_replica")


def _module_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if not name.isidentifier():
        raise ValueError(f"layer path {path!r} must end in a Python identifier")
    return name


def _check_channels(**channels: int) -> None:
    for label, value in channels.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")


def _check_padding(padding: str) -> str:
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
    return padding


class Module:
    """A node of the network tree: its public attributes (modules, lists, variables) name its variables."""

    def __init__(self, path: str) -> None:
        self.name = _module_name(path)
        self.path = path

    @property
    def variables(self) -> list[Any]:
        """Every variable under this module, in naming order."""
        return list(named_variables(self).values())

    def submodules(self) -> list[Module]:
        """Every Module below this one (not itself), depth first in attribute order."""
        found: list[Module] = []

        def visit(value: object) -> None:
            if isinstance(value, Module):
                found.append(value)
                for attribute, child in vars(value).items():
                    if not attribute.startswith("_"):
                        visit(child)
            elif isinstance(value, (list, tuple)):
                for child in value:
                    visit(child)

        for attribute, child in vars(self).items():
            if not attribute.startswith("_"):
                visit(child)
        return found


class ParamLayer(Module):
    """A layer that owns variables and can re-draw them from its seed (base of Conv2D, Dense, ...)."""

    def initial_values(self, seed: int) -> dict[str, np.ndarray]:
        """Initial value per variable attribute name ("kernel", "bias")."""
        raise NotImplementedError

    def initialise(self, seed: int) -> None:
        """Re-assign every variable its initial value for ``seed`` (what construction with ``seed`` gives)."""
        for attribute, value in self.initial_values(seed).items():
            getattr(self, attribute).assign(value)

    def _make_variables(self, seed: int) -> None:
        for attribute, value in self.initial_values(seed).items():
            setattr(self, attribute, make_variable(value, f"{self.path}/{attribute}"))


class _Convolution(ParamLayer):
    """What Conv2D and Conv2DTranspose share: validated sizes, glorot-uniform kernel, zero bias (out,)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, strides: int, padding: str, *, seed: int,
                 name: str) -> None:
        _check_channels(in_ch=in_ch, out_ch=out_ch, kernel_size=kernel_size, strides=strides)
        super().__init__(name)
        self.in_ch, self.out_ch, self.kernel_size, self.strides = in_ch, out_ch, kernel_size, strides
        self.padding = _check_padding(padding)
        self._make_variables(seed)

    def _kernel_channels(self) -> tuple[int, int]:
        """The (third, fourth) kernel dimensions."""
        raise NotImplementedError

    def initial_values(self, seed: int) -> dict[str, np.ndarray]:
        k = self.kernel_size
        first, second = self._kernel_channels()
        kernel = glorot_uniform((k, k, first, second), k * k * first, k * k * second, seed, f"{self.path}/kernel")
        return {"kernel": kernel, "bias": np.zeros((self.out_ch,), np.float32)}

    def flops(self, out_height: int, out_width: int) -> int:
        """Multiply-adds ×2 of one sample's forward pass for an output of this size."""
        return 2 * out_height * out_width * self.kernel_size ** 2 * self.in_ch * self.out_ch


class Conv2D(_Convolution):
    """2-D convolution, NHWC, kernel (k, k, in, out) glorot-uniform, zero bias (out,)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, strides: int = 1, padding: str = "SAME", *,
                 seed: int, name: str) -> None:
        super().__init__(in_ch, out_ch, kernel_size, strides, padding, seed=seed, name=name)

    def _kernel_channels(self) -> tuple[int, int]:
        return self.in_ch, self.out_ch

    def __call__(self, x: Tensor) -> Tensor:
        """x: (B, H, W, in_ch) -> (B, H', W', out_ch) in the dtype of x.

        Weights stay float32 and are cast to the input dtype, which is all mixed precision needs here.
        """
        y = ops.conv(x, ops.cast(self.kernel, x.dtype), strides=self.strides, padding=self.padding.lower(),
                     data_format="channels_last")
        return y + ops.cast(self.bias, x.dtype)


class Conv2DTranspose(_Convolution):
    """Transposed 2-D convolution, NHWC, kernel (k, k, out, in) glorot-uniform, zero bias (out,)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, strides: int = 2, padding: str = "SAME", *,
                 seed: int, name: str) -> None:
        super().__init__(in_ch, out_ch, kernel_size, strides, padding, seed=seed, name=name)
        if padding != "SAME":
            raise ValueError("Conv2DTranspose supports SAME padding only (what the discriminator uses)")

    def _kernel_channels(self) -> tuple[int, int]:
        return self.out_ch, self.in_ch

    def __call__(self, x: Tensor, output_hw: tuple[int, int] | None = None) -> Tensor:
        """x: (B, H, W, in_ch) -> (B, H·s, W·s, out_ch), or (B, *output_hw, out_ch), in the dtype of x.

        The gradient of a strided SAME convolution: an output of side n maps to ⌈n/s⌉. For n = H·s − r
        (the odd sizes a U-Net meets on the way back up) SAME padding puts ⌊(k − s + r)/2⌋ more rows on
        top than for H·s, so that output is the H·s one with its first rows cut: the same numbers as
        TensorFlow's conv2d_transpose with an explicit output shape, from Keras's default one.
        """
        y = ops.conv_transpose(x, ops.cast(self.kernel, x.dtype), strides=self.strides, padding="same",
                               data_format="channels_last")
        y = y + ops.cast(self.bias, x.dtype)
        if output_hw is None:
            return y
        full_h, full_w = int(y.shape[1]), int(y.shape[2])
        height, width = output_hw
        top = _same_pad_before(height, self.kernel_size, self.strides) - _same_pad_before(
            full_h, self.kernel_size, self.strides)
        left = _same_pad_before(width, self.kernel_size, self.strides) - _same_pad_before(
            full_w, self.kernel_size, self.strides)
        return y[:, top:top + height, left:left + width, :]


def _same_pad_before(size: int, kernel: int, stride: int) -> int:
    """Rows SAME padding adds before an input of `size` for a strided convolution (TensorFlow's rule)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2


class Dense(ParamLayer):
    """Fully connected layer, kernel (in, out) glorot-uniform, zero bias (out,)."""

    def __init__(self, in_ch: int, out_ch: int, *, seed: int, name: str) -> None:
        _check_channels(in_ch=in_ch, out_ch=out_ch)
        super().__init__(name)
        self.in_ch, self.out_ch = in_ch, out_ch
        self._make_variables(seed)

    def initial_values(self, seed: int) -> dict[str, np.ndarray]:
        kernel = glorot_uniform((self.in_ch, self.out_ch), self.in_ch, self.out_ch, seed, f"{self.path}/kernel")
        return {"kernel": kernel, "bias": np.zeros((self.out_ch,), np.float32)}

    def __call__(self, x: Tensor) -> Tensor:
        """x: (B, in_ch) -> (B, out_ch), in the dtype of x."""
        return ops.matmul(x, ops.cast(self.kernel, x.dtype)) + ops.cast(self.bias, x.dtype)


# JAX's leaky ReLU takes the slope 1 at exactly x = 0, TensorFlow's and torch's the negative slope. The
# discriminators meet many exact zeros (convolutions of the zeros outside the mask with zero biases), so
# on JAX the activation is written from relu, whose slope at 0 is 0 everywhere: slope·x + (1 − slope)·relu(x).
_JAX = keras.backend.backend() == "jax"


def leaky_relu(x: Tensor, slope: float) -> Tensor:
    """max(x, slope·x) elementwise for 0 <= slope <= 1; same shape and dtype as x; slope `slope` at 0."""
    if _JAX:
        return slope * x + (1.0 - slope) * ops.relu(x)
    return ops.leaky_relu(x, negative_slope=slope)


def leaky_relu_01(x: Tensor) -> Tensor:
    """SAEHD's default activation, leaky ReLU with slope 0.1."""
    return leaky_relu(x, 0.1)


def cos_activation(x: Tensor) -> Tensor:
    """x·cos(x) elementwise (the ``-c`` architecture flag); same shape and dtype as x."""
    return x * ops.cos(x)


def pixel_norm(x: Tensor) -> Tensor:
    """x·rsqrt(mean(x², last axis) + 1e-6); same shape and dtype as x.

    Computed in float32: squaring float16 activations above ~256 would overflow.
    """
    x32 = ops.cast(x, "float32")
    normed = x32 * ops.rsqrt(ops.mean(ops.square(x32), axis=-1, keepdims=True) + 1e-6)
    return ops.cast(normed, x.dtype)


def depth_to_space(x: Tensor, block: int = 2) -> Tensor:
    """(B, H, W, b²·C) -> (B, b·H, b·W, C), TensorFlow's NHWC order: channel (i·b + j)·C + c goes to
    sub-pixel (i, j)."""
    _, height, width, channels = ops.shape(x)
    out = int(channels) // (block * block)
    x = ops.reshape(x, (-1, height, width, block, block, out))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height * block, width * block, out))


class Downscale(Module):
    """k×k conv with stride 2 (SAME padding), then the activation: (B, H, W, in) -> (B, ⌈H/2⌉, ⌈W/2⌉, out)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 5, *, activation: Activation, seed: int,
                 name: str) -> None:
        super().__init__(name)
        self.activation = activation
        self.conv = Conv2D(in_ch, out_ch, kernel, strides=2, seed=seed, name=f"{name}/conv")

    def __call__(self, x: Tensor) -> Tensor:
        return self.activation(self.conv(x))


class Upscale(Module):
    """k×k conv to 4·out channels, activation, depth-to-space ×2: (B, H, W, in) -> (B, 2H, 2W, out)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, *, activation: Activation, seed: int,
                 name: str) -> None:
        super().__init__(name)
        self.activation = activation
        self.conv = Conv2D(in_ch, 4 * out_ch, kernel, seed=seed, name=f"{name}/conv")

    def __call__(self, x: Tensor) -> Tensor:
        return depth_to_space(self.activation(self.conv(x)), 2)


class ResidualBlock(Module):
    """conv → leaky 0.2 → conv → + input → leaky 0.2, channel count kept: (B, H, W, ch) -> same shape.

    The slope is fixed at 0.2 by SAEHD's definition of the block; the ``-c`` flag does not change it.
    """

    def __init__(self, ch: int, kernel: int = 3, *, seed: int, name: str) -> None:
        super().__init__(name)
        self.conv_0 = Conv2D(ch, ch, kernel, seed=seed, name=f"{name}/conv_0")
        self.conv_1 = Conv2D(ch, ch, kernel, seed=seed, name=f"{name}/conv_1")

    def __call__(self, x: Tensor) -> Tensor:
        y = self.conv_1(leaky_relu(self.conv_0(x), 0.2))
        return leaky_relu(x + y, 0.2)


def is_variable(value: object) -> bool:
    return isinstance(value, keras.Variable)


def named_variables(module: Module, prefix: str = "") -> dict[str, Any]:
    """Every variable under ``module`` as {slash path: variable}, in attribute-definition order.

    The path joins public attribute names (private ``_...`` attributes are skipped); the i-th item of a
    list attribute ``down`` is named ``down_i``. A variable reachable twice keeps its first name.
    Raises ValueError if two different variables would get the same name.
    """
    found: dict[str, Any] = {}
    seen: set[int] = set()

    def visit(value: object, path: str) -> None:
        if is_variable(value):
            if id(value) in seen:
                return
            if path in found:
                raise ValueError(f"two variables share the name {path!r}")
            seen.add(id(value))
            found[path] = value
        elif isinstance(value, Module):
            for attribute, child in vars(value).items():
                if not attribute.startswith("_") and attribute not in ("name", "path"):
                    visit(child, f"{path}/{attribute}" if path else attribute)
        elif isinstance(value, (list, tuple)):
            for index, child in enumerate(value):
                visit(child, f"{path}_{index}")

    visit(module, prefix)
    return found


def reinitialise(module: Module, seed: int) -> None:
    """Reset every parameter layer under ``module`` (itself included) to its initial values for ``seed``."""
    layers = [module] if isinstance(module, ParamLayer) else []
    layers += [m for m in module.submodules() if isinstance(m, ParamLayer)]
    for layer in layers:
        layer.initialise(seed)
