"""Model registry keyed by `model_architecture`; factories take the data's shape and model_parameters."""
from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import FlopynetError, UnavailableError

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory `f(input_shape, num_classes, **model_parameters) -> nn.Module`."""
    def deco(factory: ModelFactory) -> ModelFactory:
        MODELS[name] = factory
        return factory
    return deco


@register_model("mlp")
def mlp(input_shape: tuple[int, ...], num_classes: int, hidden_layers: list[int] = (64,)) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in _positive_ints("hidden_layers", hidden_layers, "mlp"):
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_model("logreg")
def logreg(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def _image_shape(input_shape: tuple[int, ...], input_channels: int | None, architecture: str) -> tuple[int, int, int]:
    """(channels, height, width) of the data; 2-D inputs such as digits' 8x8 count as one channel."""
    shape = tuple(input_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3:
        raise FlopynetError(f"fl_config.model_architecture: {architecture} needs image inputs "
                            f"(channels, height, width), the data set gives shape {tuple(input_shape)}")
    if input_channels is not None and input_channels != shape[0]:
        raise FlopynetError(f"fl_config.model_parameters.input_channels: {input_channels} but the data set's "
                            f"images have {shape[0]} channels")
    return shape  # type: ignore[return-value]


def _positive_ints(name: str, values, architecture: str) -> list[int]:
    if not (isinstance(values, (list, tuple)) and values
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)):
        raise FlopynetError(f"fl_config.model_parameters.{name}: {architecture} needs a non-empty list of "
                            f"positive integers, got {values!r}")
    return list(values)


def _positive_int(name: str, value, architecture: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise FlopynetError(f"fl_config.model_parameters.{name}: {architecture} needs a positive integer, got {value!r}")
    return value


@register_model("cnn")
def cnn(input_shape: tuple[int, ...], num_classes: int, hidden_layers: list[int] = (32, 64),
        input_channels: int | None = None) -> nn.Module:
    """The seed's CNN: per width in hidden_layers a 3x3 convolution, ReLU and 2x2 max-pooling (while the
    image is at least 2 pixels wide), then one linear classifier."""
    channels, height, width = _image_shape(input_shape, input_channels, "cnn")
    layers: list[nn.Module] = [nn.Unflatten(1, (1, height))] if len(input_shape) == 2 else []  # [b, h, w] -> [b, 1, h, w]
    for h in _positive_ints("hidden_layers", hidden_layers, "cnn"):
        layers += [nn.Conv2d(channels, h, 3, padding=1), nn.ReLU()]
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        channels = h
    layers += [nn.Flatten(), nn.Linear(channels * height * width, num_classes)]
    return nn.Sequential(*layers)


class LSTMClassifier(nn.Module):
    """A stacked LSTM (the equations of torch.nn.LSTM) classifying from its last time step.

    Written with plain linear layers rather than torch.nn.LSTM so torch.func.vmap can train many
    clients at once (the fused cuDNN/ATen LSTM kernel has no batching rule)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, num_classes: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.cells = nn.ModuleList(nn.Linear((input_size if i == 0 else hidden_size) + hidden_size, 4 * hidden_size)
                                   for i in range(num_layers))
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, seq, input_size]
        seq = x.unbind(1)
        for cell in self.cells:
            h = x.new_zeros(x.shape[0], self.hidden_size)
            c = torch.zeros_like(h)
            out = []
            for x_t in seq:
                i, f, g, o = cell(torch.cat([x_t, h], 1)).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                out.append(h)
            seq = out
        return self.head(seq[-1])


@register_model("lstm")
def lstm(input_shape: tuple[int, ...], num_classes: int, input_size: int | None = None, hidden_size: int = 64,
         num_layers: int = 1) -> nn.Module:
    """LSTM over inputs of shape [seq_len, input_size]; the class comes from the last step's hidden state."""
    if len(input_shape) != 2:
        raise FlopynetError(f"fl_config.model_architecture: lstm needs sequences [seq_len, input_size], "
                            f"the data set gives shape {tuple(input_shape)}")
    if input_size is not None and input_size != input_shape[1]:
        raise FlopynetError(f"fl_config.model_parameters.input_size: {input_size} but the data set's sequences "
                            f"have {input_shape[1]} features per step")
    return LSTMClassifier(input_shape[1], _positive_int("hidden_size", hidden_size, "lstm"),
                          _positive_int("num_layers", num_layers, "lstm"), num_classes)


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm (Wu and He 2018) in place of BatchNorm: no running statistics to average or to keep
    per client, which is why FL work uses it (Hsieh et al. 2020), and it trains under vmap."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _norm(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _norm(cout))
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, expansion: int, stride: int):
        super().__init__()
        mid = cin * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), _norm(mid), nn.ReLU6()]
        layers += [nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), _norm(mid), nn.ReLU6(),
                   nn.Conv2d(mid, cout, 1, bias=False), _norm(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def _pretrained(model: nn.Module, architecture: str, pretrained: bool, weights_path: str | None) -> nn.Module:
    """Nothing is downloaded: pretrained weights come from a local state-dict file."""
    if not isinstance(pretrained, bool):
        raise FlopynetError(f"fl_config.model_parameters.pretrained: expected true or false, got {pretrained!r}")
    if not pretrained:
        if weights_path is not None:
            raise FlopynetError("fl_config.model_parameters.weights_path: given but pretrained is false")
        return model
    if weights_path is None:
        raise FlopynetError(f"fl_config.model_parameters.pretrained: {architecture} weights cannot be downloaded "
                            f"here; set model_parameters.weights_path to a local state-dict file (torch.save)")
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise UnavailableError(f"{architecture} pretrained weights: no file at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise FlopynetError(f"fl_config.model_parameters.weights_path: {path} does not fit {architecture} "
                            f"with these parameters: {str(exc).splitlines()[0]} ...") from None
    return model


@register_model("resnet18")
def resnet18(input_shape: tuple[int, ...], num_classes: int, pretrained: bool = False,
             weights_path: str | None = None) -> nn.Module:
    """ResNet-18 (He et al. 2016) in its CIFAR form: 3x3 stem without max-pooling, four stages of two
    basic blocks (64, 128, 256, 512 channels), GroupNorm in place of BatchNorm."""
    channels, _, _ = _image_shape(input_shape, None, "resnet18")
    layers: list[nn.Module] = [nn.Unflatten(1, (1, input_shape[0]))] if len(input_shape) == 2 else []
    layers += [nn.Conv2d(channels, 64, 3, 1, 1, bias=False), _norm(64), nn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return _pretrained(nn.Sequential(*layers), "resnet18", pretrained, weights_path)


# (expansion, out channels, blocks, first stride): MobileNetV2's table with CIFAR's strides
_MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))


def _divisible(value: float, divisor: int = 8) -> int:
    """Channel count rounded to a multiple of 8, never more than 10% below value (the paper's code)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@register_model("mobilenet_v2")
def mobilenet_v2(input_shape: tuple[int, ...], num_classes: int, pretrained: bool = False,
                 weights_path: str | None = None, width_mult: float = 1.0) -> nn.Module:
    """MobileNetV2 (Sandler et al. 2018) in its CIFAR form (stride-1 stem and second stage, so 32x32
    inputs end at 4x4), GroupNorm in place of BatchNorm. width_mult scales every layer's channels
    as the paper's width multiplier does (the last layer keeps 1280 for width_mult < 1)."""
    if not isinstance(width_mult, (int, float)) or isinstance(width_mult, bool) or width_mult <= 0:
        raise FlopynetError(f"fl_config.model_parameters.width_mult: {width_mult!r} is not a positive number "
                            "(mobilenet_v2)")
    channels, _, _ = _image_shape(input_shape, None, "mobilenet_v2")
    layers: list[nn.Module] = [nn.Unflatten(1, (1, input_shape[0]))] if len(input_shape) == 2 else []
    cin = _divisible(32 * width_mult)
    layers += [nn.Conv2d(channels, cin, 3, 1, 1, bias=False), _norm(cin), nn.ReLU6()]
    for expansion, cout, blocks, stride in _MOBILENET_V2:
        cout = _divisible(cout * width_mult)
        for i in range(blocks):
            layers.append(InvertedResidual(cin, cout, expansion, stride if i == 0 else 1))
            cin = cout
    last = _divisible(1280 * max(1.0, width_mult))
    layers += [nn.Conv2d(cin, last, 1, bias=False), _norm(last), nn.ReLU6(), nn.AdaptiveAvgPool2d(1),
               nn.Flatten(), nn.Linear(last, num_classes)]
    return _pretrained(nn.Sequential(*layers), "mobilenet_v2", pretrained, weights_path)


def model_problems(architecture: str, parameters: dict) -> list[tuple[str, str]]:
    """(field, reason) for a model the registry does not have, or parameters its factory does not
    take; the scenario's validation reports them with its file."""
    if architecture not in MODELS:
        return [("fl_config.model_architecture",
                 f"unknown model {architecture!r} (available: {', '.join(sorted(MODELS))})")]
    accepted = set(inspect.signature(MODELS[architecture]).parameters) - {"input_shape"}
    unknown = sorted(set(parameters) - accepted)
    if unknown:
        return [("fl_config.model_parameters", f"{', '.join(unknown)} not accepted by model {architecture!r} "
                 f"(accepted: {', '.join(sorted(accepted)) or 'none'})")]
    return []


def build_model(architecture: str, parameters: dict, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model for a scenario; model_parameters may set num_classes and the factory's own arguments."""
    for field, reason in model_problems(architecture, parameters):
        raise FlopynetError(f"{field}: {reason}")
    params = dict(parameters)
    declared = params.pop("num_classes", num_classes)
    if declared != num_classes:
        raise FlopynetError(f"fl_config.model_parameters.num_classes: {declared} but the data set has {num_classes} classes")
    return MODELS[architecture](input_shape, num_classes, **params)


def forward_cost(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """One sample's forward pass: its FLOPs, counted by torch's own FLOP counter, and how many
    linear and convolution layers it calls (an LSTM cell once per time step)."""
    calls = 0

    def count(*_) -> None:
        nonlocal calls
        calls += 1
    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
    return int(counter.get_total_flops()), calls


def forward_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one sample's forward pass, counted by torch's own FLOP counter."""
    return forward_cost(model, input_shape)[0]
