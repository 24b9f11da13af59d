"""Dynamic activation steering (DAS): add ``alpha * v`` where a linear probe says "biased".

A :class:`Steerer` holds one hook point, one steering vector and one linear gate (and, for a *band*
scope, further hook points at later layers that reuse the same gate decision). Its hook runs on
every forward call (prompt pass and each cached generation step) and decides *per row and per
position*, on the device, without a host synchronisation:

    gate = P(unbiased | a) < tau          (mode "dynamic"; "static" = always; "off" = never)
    a    <- a + alpha * v * gate

Position policies (which positions of a forward call are probed):

* ``"generated"`` (default, the reference behaviour): the last position of every forward call —
  the last prompt token in the prompt pass and each new token in cached generation;
* ``"last_prompt"``: the last position of multi-token calls only (never the generation steps);
* ``"all"``: every position (used for log-likelihood scoring and CrowS-Pairs).

"Last position" means column ``-1``: batched prompts must be **left**-padded (fairlens' scoring and
generation helpers do this). A forward call of a single token is treated as a generation step.

:meth:`Steerer.apply` is a context manager that adds exactly one hook and removes exactly that hook
on exit, also when the body raises; it never calls ``reset_hooks``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from fairlens.backend import add_hooks, padding_now, parse_hook_name, real_tokens
from fairlens.distributed import counting
from fairlens.errors import ConfigError
from fairlens.model_types import Model

SteerMode = Literal["dynamic", "static", "off"]
PositionPolicy = Literal["generated", "last_prompt", "all"]
STEER_MODES: tuple[str, ...] = ("dynamic", "static", "off")
POSITION_POLICIES: tuple[str, ...] = ("generated", "last_prompt", "all")


@dataclass(frozen=True)
class SteeringConfig:
    """How a fitted steerer is applied.

    Attributes:
        mode: ``"dynamic"`` (FairSteer), ``"static"`` (always add: the paper's "DSV only"), ``"off"``.
        alpha: Scale of the steering vector (paper: 1.0).
        tau: Gate threshold on P(unbiased) (paper: 0.5).
        positions: Position policy, see the module docstring.
    """

    mode: SteerMode = "dynamic"
    alpha: float = 1.0
    tau: float = 0.5
    positions: PositionPolicy = "generated"

    def __post_init__(self) -> None:
        if self.mode not in STEER_MODES:
            raise ConfigError(
                f"mode must be one of {STEER_MODES}, got {self.mode!r}.",
                "pass mode='dynamic', 'static' or 'off'.",
            )
        if self.positions not in POSITION_POLICIES:
            raise ConfigError(
                f"positions must be one of {POSITION_POLICIES}, got {self.positions!r}.",
                "pass positions='generated', 'last_prompt' or 'all'.",
            )
        if not 0.0 <= self.tau <= 1.0:
            raise ConfigError(
                f"tau is a probability threshold in [0, 1], got {self.tau}.",
                "pass a tau between 0 and 1 (FairSteer's default is 0.5).",
            )
        if not isinstance(self.alpha, int | float) or not math.isfinite(self.alpha):
            raise ConfigError(
                f"alpha must be a finite number, got {self.alpha!r}.",
                "pass a finite steering strength.",
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    """What the gate did during one ``apply`` block, measured (immutable; from :meth:`GateStats.result`).

    Attributes:
        fired: Positions where the vector was added.
        probed: Positions the gate decided on: the steering window's tokens (pads of a padded batch
            run through :func:`fairlens.backend.forward_logits` or ``last_token_logits`` are not
            counted; other callers' batches are counted whole).
        calls: Forward calls that steered.
    """

    fired: int
    probed: int
    calls: int

    @property
    def rate(self) -> float:
        """Fraction of probed positions where the vector was added (0.0 when nothing was probed)."""
        return self.fired / self.probed if self.probed else 0.0


@dataclass
class GateStats:
    """The recorder of one ``apply`` block: counts kept on the model's device (one sync at the end),
    and with ``record=True`` each forward call's decisions (and, for a dynamic gate, P(unbiased)).

    Every block gets its own recorder, so two runs never share one; read the measured, immutable
    :class:`GateResult` with :meth:`result` once the block has run.
    """

    fired: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))
    probed: Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.long))
    record: bool = False
    history: list[Tensor] = field(default_factory=list)  # per call: [batch, window] P(unbiased)
    decisions: list[Tensor] = field(default_factory=list)  # per call: [batch, window] fired (bool)
    calls: int = 0

    @property
    def rate(self) -> float:
        """Fraction of probed positions where the vector was added."""
        return self.result().rate

    def result(self) -> GateResult:
        """The counts so far as an immutable :class:`GateResult`."""
        return GateResult(int(self.fired), int(self.probed), self.calls)

    def counts(self) -> list[int]:
        """``[fired, probed, calls]`` (a :class:`fairlens.distributed.Counter`: a loop shared
        among processes sums them over the processes)."""
        return [int(self.fired), int(self.probed), self.calls]

    def add_counts(self, extra: list[int]) -> None:
        """Add other processes' ``[fired, probed, calls]``."""
        self.fired = self.fired + extra[0]
        self.probed = self.probed + extra[1]
        self.calls += extra[2]


class Steerer:
    """One hook point, one steering vector, one linear gate.

    Args:
        hook_name: TL hook name (e.g. ``"blocks.12.hook_resid_post"``).
        vector: ``[d_model]`` steering vector (added unnormalised, times ``alpha``).
        coef: ``[d_model]`` probe weights; ``P(unbiased) = sigmoid(a @ coef + intercept)``.
        intercept: Probe bias.
        config: :class:`SteeringConfig`.
        band: Further ``(hook_name, vector)`` pairs at later layers (a band of consecutive layers):
            each adds ``alpha * vector`` at the same rows and positions as the first hook, using the
            gate decided there on the unsteered activation (so one decision per position, as the
            prefix-cached search composes it).
    """

    def __init__(
        self,
        hook_name: str,
        vector: Float[Tensor, " d_model"],
        coef: Float[Tensor, " d_model"],
        intercept: float | Tensor,
        config: SteeringConfig | None = None,
        band: Sequence[tuple[str, Tensor]] = (),
    ) -> None:
        if vector.ndim != 1 or coef.shape != vector.shape:
            raise ConfigError(
                f"vector and coef must both be [d_model]; got {tuple(vector.shape)} and "
                f"{tuple(coef.shape)}.",
                "pass vector and coef as 1-D tensors of the same width (d_model).",
            )
        for name, vec in band:
            if vec.shape != vector.shape:
                raise ConfigError(
                    f"band vector at {name} has shape {tuple(vec.shape)}; "
                    f"expected {tuple(vector.shape)}.",
                    "pass band vectors of the same width as vector.",
                )
            if parse_hook_name(name)[1] <= parse_hook_name(hook_name)[1]:
                raise ConfigError(
                    f"band hook {name} must be at a later layer than the gated hook {hook_name}.",
                    "pass band hooks at layers after the gated hook's layer.",
                )
        for what, t in (("vector", vector), ("coef", coef), *((n, v) for n, v in band)):
            if not bool(torch.isfinite(t).all()):
                raise ConfigError(
                    f"the steering {what} contains NaN or infinite values.",
                    "refit the direction/probe or check the loaded artifact.",
                )
        self.hook_name = hook_name
        self.band = tuple((name, vec.detach().float()) for name, vec in band)
        self._gate: Tensor | None = None
        self.vector = vector.detach().float()
        self.coef = coef.detach().float()
        self.intercept = torch.as_tensor(intercept, dtype=torch.float32).reshape(())
        self.config = config or SteeringConfig()
        self.stats = GateStats()

    def _on(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        if self.vector.device != device:
            self.vector, self.coef, self.intercept = (
                t.to(device) for t in (self.vector, self.coef, self.intercept)
            )
        return self.vector.to(dtype), self.coef, self.intercept

    def p_unbiased(self, act: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        """Gate probability for activations (float32 math, any device)."""
        _, coef, intercept = self._on(act.device, act.dtype)
        return torch.sigmoid(act.float() @ coef + intercept)

    def steer(self, act: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        """Apply the gate and the vector to one forward call's activations (counted in ``stats``)."""
        return self._steer(act, self.stats)

    def _steer(self, act: Tensor, stats: GateStats) -> Tensor:
        cfg = self.config
        self._gate = None
        if cfg.mode == "off" or cfg.alpha == 0:
            return act
        n_pos = act.shape[1]
        if cfg.positions == "all":
            window = slice(0, n_pos)
        elif cfg.positions == "generated" or n_pos > 1:
            window = slice(n_pos - 1, n_pos)
            if n_pos > 1 and not torch.compiler.is_compiling() and padding_now() == "right":
                raise ConfigError(
                    "this steerer edits the last column of the batch, and the batch is padded on "
                    "the right: the last column is a pad for every shorter row.",
                    "pad on the left (padding_side='left', the default), or steer positions='all'.",
                )
        else:  # last_prompt and a single-token (generation) step
            return act
        vector, _, _ = self._on(act.device, act.dtype)
        part = act[:, window]
        if cfg.mode == "dynamic":
            prob = self.p_unbiased(part)
            gate = prob < cfg.tau
            if stats.record:
                stats.history.append(prob.detach().cpu())
        else:
            gate = torch.ones(part.shape[:2], dtype=torch.bool, device=act.device)
        if stats.record:
            stats.decisions.append(gate.detach().cpu())
        if stats.fired.device != act.device:
            stats.fired = stats.fired.to(act.device)
            stats.probed = stats.probed.to(act.device)
        # the padding mask lives in a ContextVar, which torch.compile cannot trace: a compiled
        # forward counts every window position (pads included) instead of breaking the graph
        real = None if torch.compiler.is_compiling() else real_tokens()
        if real is not None and real.shape == act.shape[:2]:  # count tokens, never pads
            real = real[:, window].to(gate.device)
            stats.fired += (gate & real).sum()
            stats.probed += real.sum()
        else:
            stats.fired += gate.sum()
            stats.probed += gate.numel()
        stats.calls += 1
        self._gate = gate
        return _add(act, window, cfg.alpha * vector, gate)

    def _band_fn(self, vector: Tensor) -> Any:
        """The hook of one later band layer: same window and gate as the first hook's call."""

        def fn(act: Tensor) -> Tensor:
            gate = self._gate
            if gate is None or gate.shape[0] != act.shape[0]:
                return act  # the first hook did not steer this call (off, alpha 0, or skipped)
            n_pos = act.shape[1]
            width = gate.shape[1]
            window = slice(n_pos - width, n_pos)
            return _add(act, window, self.config.alpha * vector.to(act.device, act.dtype), gate)

        return fn

    @contextmanager
    def apply(self, model: Model, *, record: bool = False) -> Iterator[GateStats]:
        """Steer ``model`` inside the block; yields live :class:`GateStats`.

        ``model`` is a ``HookedTransformer`` (analysis path) or a plain transformers causal LM of any registered family
        (fast path: one torch forward hook on the matching decoder module, same numbers).
        """
        stats = self.stats = GateStats(record=record)
        self._gate = None
        fns = [(self.hook_name, lambda act: self._steer(act, stats))]
        fns += [(n, self._band_fn(v)) for n, v in self.band]
        try:
            with add_hooks(model, fns), counting(stats):
                yield stats
        finally:
            self._gate = None

    @property
    def hook_names(self) -> tuple[str, ...]:
        """Every hook this steerer adds to (the gated one first)."""
        return (self.hook_name, *(n for n, _ in self.band))

    def static_edit(self) -> dict[str, Tensor]:
        """What this steerer adds at a steered position, per hook: ``alpha * vector`` at the gated
        hook and at each band hook (zeros when its mode is ``off``): the edit a variant scorer
        applies at the last prompt position."""
        scale = self.config.alpha if self.config.mode != "off" else 0.0
        vectors = [self.vector, *(v for _, v in self.band)]
        return {n: scale * v for n, v in zip(self.hook_names, vectors, strict=True)}

    def with_config(self, **changes: Any) -> Steerer:
        """A copy with some :class:`SteeringConfig` fields changed (same tensors)."""
        cfg = SteeringConfig(**{**self.config.to_dict(), **changes})
        return Steerer(self.hook_name, self.vector, self.coef, self.intercept, cfg, self.band)


def _add(act: Tensor, window: slice, vector: Tensor, gate: Tensor) -> Tensor:
    """``act`` with ``vector`` added in ``window`` where ``gate`` is set (no copy when it is the
    whole sequence; in place on a clone otherwise)."""
    n_pos = act.shape[1]
    steered = act[:, window] + vector * gate.unsqueeze(-1).to(act.dtype)
    if window.start == 0 and window.stop == n_pos:
        return steered
    out = act.clone() if act.requires_grad else act
    out[:, window] = steered
    return out
