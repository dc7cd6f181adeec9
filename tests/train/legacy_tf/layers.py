"""Before the Keras 3 port (commit 8bc8dd1), kept as the parity reference. Building blocks for the SAEHD networks: seeded conv/dense layers, activations and named variable listing.

Everything is NHWC. DeepFaceLab runs NCHW on the GPU, but TensorFlow's CPU kernels only implement NHWC
convolutions, so we use NHWC everywhere and get one weight layout on every device.

Layers are plain ``tf.Module`` objects holding float32 ``tf.Variable``s. Each layer is given its full
slash path (``"encoder/down_0/conv"``); its variables are named ``<path>/kernel`` and ``<path>/bias``,
and their initial values come from a stateless generator keyed by (seed, variable name). Building a
network twice with the same seed therefore gives identical weights whatever the build order, and
``named_variables`` (which derives names from the module tree) returns the same names the layers used.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import tensorflow as tf

Activation = Callable[[tf.Tensor], tf.Tensor]

_PADDINGS = ("SAME", "VALID")


def _derived_seed(seed: int, key: str) -> tf.Tensor:
    """A stateless-RNG seed (shape (2,), int64) from the model seed and a variable name.

    A cryptographic hash (not Python's salted ``hash``) keeps it identical across processes.
    """
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=16).digest()
    halves = [int.from_bytes(digest[i : i + 8], "little", signed=True) for i in (0, 8)]
    return tf.constant(halves, dtype=tf.int64)


def glorot_uniform(shape: Sequence[int], fan_in: int, fan_out: int, seed: int, key: str) -> tf.Tensor:
    """Glorot-uniform values, U(-l, l) with l = sqrt(6 / (fan_in + fan_out)), float32 of ``shape``.

    Philox is named explicitly: TF's auto-selected algorithm may differ between CPU and GPU.
    """
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.random.stateless_uniform(
        shape, seed=_derived_seed(seed, key), minval=-limit, maxval=limit, dtype=tf.float32, alg="philox"
    )


def _module_name(path: str) -> str:
    """The last component of a slash path, which tf.Module accepts as its (identifier) name."""
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


class ParamLayer(tf.Module):
    """A layer that owns variables and can re-draw them from its seed (base of Conv2D, Dense, ...)."""

    def __init__(self, path: str) -> None:
        super().__init__(name=_module_name(path))
        self.path = path

    def initial_values(self, seed: int) -> dict[str, tf.Tensor]:
        """Initial value per variable attribute name ("kernel", "bias")."""
        raise NotImplementedError

    def initialise(self, seed: int) -> None:
        """Re-assign every variable its initial value for ``seed`` (what construction with ``seed`` gives)."""
        for attribute, value in self.initial_values(seed).items():
            getattr(self, attribute).assign(value)

    def _make_variables(self, seed: int) -> None:
        for attribute, value in self.initial_values(seed).items():
            setattr(self, attribute, tf.Variable(value, name=f"{self.path}/{attribute}", trainable=True))


class _Convolution(ParamLayer):
    """What Conv2D and Conv2DTranspose share: validated sizes, glorot-uniform kernel, zero bias (out,).

    Subclasses say only how their kernel is laid out (`_kernel_channels`).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        strides: int,
        padding: str,
        *,
        seed: int,
        name: str,
    ) -> None:
        _check_channels(in_ch=in_ch, out_ch=out_ch, kernel_size=kernel_size, strides=strides)
        super().__init__(name)
        self.in_ch, self.out_ch, self.kernel_size, self.strides = in_ch, out_ch, kernel_size, strides
        self.padding = _check_padding(padding)
        self._make_variables(seed)

    def _kernel_channels(self) -> tuple[int, int]:
        """The (third, fourth) kernel dimensions."""
        raise NotImplementedError

    def initial_values(self, seed: int) -> dict[str, tf.Tensor]:
        k = self.kernel_size
        first, second = self._kernel_channels()
        kernel = glorot_uniform((k, k, first, second), k * k * first, k * k * second, seed, f"{self.path}/kernel")
        return {"kernel": kernel, "bias": tf.zeros((self.out_ch,), tf.float32)}


class Conv2D(_Convolution):
    """2-D convolution, NHWC, kernel (k, k, in, out) glorot-uniform, zero bias (out,)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, strides: int = 1, padding: str = "SAME", *,
                 seed: int, name: str) -> None:
        super().__init__(in_ch, out_ch, kernel_size, strides, padding, seed=seed, name=name)

    def _kernel_channels(self) -> tuple[int, int]:
        return self.in_ch, self.out_ch

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """x: (B, H, W, in_ch), float32 or float16 -> (B, H', W', out_ch) in the dtype of x.

        Weights stay float32 and are cast to the input dtype, which is all mixed precision needs here.
        """
        y = tf.nn.conv2d(x, tf.cast(self.kernel, x.dtype), self.strides, self.padding)
        return tf.nn.bias_add(y, tf.cast(self.bias, x.dtype))


class Conv2DTranspose(_Convolution):
    """Transposed 2-D convolution, NHWC, kernel (k, k, out, in) glorot-uniform, zero bias (out,)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, strides: int = 2, padding: str = "SAME", *,
                 seed: int, name: str) -> None:
        super().__init__(in_ch, out_ch, kernel_size, strides, padding, seed=seed, name=name)

    def _kernel_channels(self) -> tuple[int, int]:
        return self.out_ch, self.in_ch

    def __call__(self, x: tf.Tensor, output_hw: tuple[int, int] | None = None) -> tf.Tensor:
        """x: (B, H, W, in_ch) -> (B, H', W', out_ch), in the dtype of x.

        ``output_hw`` defaults to (H·s, W·s) for SAME padding and (H·s + k − s, ...) for VALID. A caller
        undoing a strided SAME conv of an odd size passes the size it wants back (2h − 1 is valid too).
        """
        if output_hw is None:
            extra = 0 if self.padding == "SAME" else max(self.kernel_size - self.strides, 0)
            height = tf.shape(x)[1] * self.strides + extra
            width = tf.shape(x)[2] * self.strides + extra
        else:
            height, width = output_hw
        output_shape = tf.stack([tf.shape(x)[0], height, width, self.out_ch])
        y = tf.nn.conv2d_transpose(x, tf.cast(self.kernel, x.dtype), output_shape, self.strides, self.padding)
        return tf.nn.bias_add(y, tf.cast(self.bias, x.dtype))


class Dense(ParamLayer):
    """Fully connected layer, kernel (in, out) glorot-uniform, zero bias (out,)."""

    def __init__(self, in_ch: int, out_ch: int, *, seed: int, name: str) -> None:
        _check_channels(in_ch=in_ch, out_ch=out_ch)
        super().__init__(name)
        self.in_ch, self.out_ch = in_ch, out_ch
        self._make_variables(seed)

    def initial_values(self, seed: int) -> dict[str, tf.Tensor]:
        kernel = glorot_uniform(
            (self.in_ch, self.out_ch), self.in_ch, self.out_ch, seed, f"{self.path}/kernel"
        )
        return {"kernel": kernel, "bias": tf.zeros((self.out_ch,), tf.float32)}

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        """x: (B, in_ch) -> (B, out_ch), in the dtype of x."""
        return tf.matmul(x, tf.cast(self.kernel, x.dtype)) + tf.cast(self.bias, x.dtype)


def leaky_relu(x: tf.Tensor, slope: float) -> tf.Tensor:
    """max(x, slope·x) elementwise for 0 <= slope <= 1; same shape and dtype as x."""
    return tf.nn.leaky_relu(x, alpha=slope)


def leaky_relu_01(x: tf.Tensor) -> tf.Tensor:
    """SAEHD's default activation, leaky ReLU with slope 0.1."""
    return tf.nn.leaky_relu(x, alpha=0.1)


def cos_activation(x: tf.Tensor) -> tf.Tensor:
    """x·cos(x) elementwise (the ``-c`` architecture flag); same shape and dtype as x."""
    return x * tf.cos(x)


def pixel_norm(x: tf.Tensor) -> tf.Tensor:
    """x·rsqrt(mean(x², last axis) + 1e-6); same shape and dtype as x.

    Computed in float32: squaring float16 activations above ~256 would overflow.
    """
    x32 = tf.cast(x, tf.float32)
    normed = x32 * tf.math.rsqrt(tf.reduce_mean(tf.square(x32), axis=-1, keepdims=True) + 1e-6)
    return tf.cast(normed, x.dtype)


class Downscale(tf.Module):
    """k×k conv with stride 2 (SAME padding), then the activation: (B, H, W, in) -> (B, ⌈H/2⌉, ⌈W/2⌉, out)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 5, *, activation: Activation, seed: int, name: str
    ) -> None:
        super().__init__(name=_module_name(name))
        self.path = name
        self.activation = activation
        self.conv = Conv2D(in_ch, out_ch, kernel, strides=2, seed=seed, name=f"{name}/conv")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return self.activation(self.conv(x))


class Upscale(tf.Module):
    """k×k conv to 4·out channels, activation, depth-to-space ×2: (B, H, W, in) -> (B, 2H, 2W, out)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 3, *, activation: Activation, seed: int, name: str
    ) -> None:
        super().__init__(name=_module_name(name))
        self.path = name
        self.activation = activation
        self.conv = Conv2D(in_ch, 4 * out_ch, kernel, seed=seed, name=f"{name}/conv")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.depth_to_space(self.activation(self.conv(x)), 2)


class ResidualBlock(tf.Module):
    """conv → leaky 0.2 → conv → + input → leaky 0.2, channel count kept: (B, H, W, ch) -> same shape.

    The slope is fixed at 0.2 by SAEHD's definition of the block; the ``-c`` flag does not change it.
    """

    def __init__(self, ch: int, kernel: int = 3, *, seed: int, name: str) -> None:
        super().__init__(name=_module_name(name))
        self.path = name
        self.conv_0 = Conv2D(ch, ch, kernel, seed=seed, name=f"{name}/conv_0")
        self.conv_1 = Conv2D(ch, ch, kernel, seed=seed, name=f"{name}/conv_1")

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        y = self.conv_1(leaky_relu(self.conv_0(x), 0.2))
        return leaky_relu(x + y, 0.2)


def named_variables(module: tf.Module, prefix: str = "") -> dict[str, tf.Variable]:
    """Every variable under ``module`` as {slash path: variable}, in attribute-definition order.

    The path joins public attribute names (private ``_...`` attributes are skipped); the i-th item of a
    list attribute ``down`` is named ``down_i``. A variable reachable twice keeps its first name.
    Raises ValueError if two different variables would get the same name.
    """
    found: dict[str, tf.Variable] = {}
    seen: set[int] = set()

    def visit(value: object, path: str) -> None:
        if isinstance(value, tf.Variable):
            if id(value) in seen:
                return
            if path in found:
                raise ValueError(f"two variables share the name {path!r}")
            seen.add(id(value))
            found[path] = value
        elif isinstance(value, tf.Module):
            for attribute, child in vars(value).items():
                if not attribute.startswith("_"):
                    visit(child, f"{path}/{attribute}" if path else attribute)
        elif isinstance(value, (list, tuple)):
            for index, child in enumerate(value):
                visit(child, f"{path}_{index}")

    visit(module, prefix)
    return found


def reinitialise(module: tf.Module, seed: int) -> None:
    """Reset every parameter layer under ``module`` (itself included) to its initial values for ``seed``."""
    layers = [module] if isinstance(module, ParamLayer) else []
    layers += [m for m in module.submodules if isinstance(m, ParamLayer)]
    for layer in layers:
        layer.initialise(seed)
