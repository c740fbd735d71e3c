"""The samplers a method can train with, by ``method.sampler`` name: one module per sampler, one line here.

Adding a sampler (docs/architecture.md, "Add a sampler"): a :class:`~tafs.train.samplers.base.Sampler` subclass in
its own module (an SDE chain subclasses :class:`~tafs.train.samplers.base.SDESampler`), its class in ``SAMPLERS``
below, its name in the ``train.method.sampler`` enum of workflow/schemas/config.schema.yaml (a test compares the
two). Code outside the registry (a plugin, a test) can add one with :func:`register`.
"""

from __future__ import annotations

from tafs.train.samplers.annealed import Annealed
from tafs.train.samplers.base import Sampler
from tafs.train.samplers.cps import CPS
from tafs.train.samplers.dance_sde import DanceSDE
from tafs.train.samplers.flow_sde import FlowSDE
from tafs.train.samplers.mix_sde import MixSDE

SAMPLERS: dict[str, type[Sampler]] = {cls.name: cls for cls in (Annealed, FlowSDE, DanceSDE, MixSDE, CPS)}


def register(cls: type[Sampler]) -> type[Sampler]:
    """Add ``cls`` under ``cls.name`` (usable as a class decorator); a name is registered once."""
    if not (isinstance(cls, type) and issubclass(cls, Sampler)):
        raise TypeError(f"a sampler is a subclass of tafs.train.samplers.base.Sampler, got {cls!r}")
    if SAMPLERS.get(cls.name, cls) is not cls:
        raise ValueError(f"sampler {cls.name!r} is already registered ({SAMPLERS[cls.name].__qualname__})")
    SAMPLERS[cls.name] = cls
    return cls


def get_sampler(name: str) -> type[Sampler]:
    """The sampler class registered as ``name`` (the ``method.sampler`` value)."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"method.sampler must be one of {tuple(SAMPLERS)}, got {name!r}")
    return SAMPLERS[name]


def reading(option: str) -> tuple[str, ...]:
    """The samplers that read the sampler-specific ``method.<option>`` (registry order)."""
    return tuple(name for name, cls in SAMPLERS.items() if option in cls.options)
