"""Rewards by name: config-built rewards come from this registry, one entry per reward.

>>> build_rewards(["vdc", "ccs"], critic="google/medsiglip-448")
>>> register_reward("my_reward", lambda critic, probe: MyReward(critic))   # then `rewards: [my_reward]` works

A factory takes the loaded critic and the loaded probe (``None`` when no probe was configured) and
returns a reward object (``name`` + ``__call__(images, batch) -> [B]``). ``needs_probe`` entries refuse
to build without a probe, with a message naming the config field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from clinalign.errors import ConfigError

RewardFactory = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class RewardEntry:
    """One registered reward: how to build it and whether it needs a LinearProbe."""

    name: str
    factory: RewardFactory
    needs_probe: bool = False
    needs_checklist: bool = False
    description: str = ""


_REGISTRY: dict[str, RewardEntry] = {}


def register_reward(
    name: str,
    factory: RewardFactory,
    *,
    needs_probe: bool = False,
    needs_checklist: bool = False,
    description: str = "",
    overwrite: bool = False,
) -> None:
    """Add a reward under ``name`` (lower-case); ``overwrite`` replaces an existing entry."""
    if name in _REGISTRY and not overwrite:
        raise ConfigError(f"a reward named {name!r} is already registered; pass overwrite=True to replace it.")
    _REGISTRY[name] = RewardEntry(name, factory, needs_probe, needs_checklist, description)


def reward_names() -> tuple[str, ...]:
    """Registered reward names, in registration order."""
    return tuple(_REGISTRY)


def get_reward_entry(name: str) -> RewardEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown reward name {name!r}; choose from {', '.join(_REGISTRY)}.") from None


def build_rewards(
    names: Sequence[str],
    *,
    critic: str,
    probe: str | None,
    device: Any = None,
) -> list[Any]:
    """The rewards ``names`` on one critic (hub id / directory / ``open_clip:<name>``), plus a probe directory
    for the rewards that need one (``dd``)."""
    from clinalign.critics import load_critic

    entries = [get_reward_entry(n) for n in names]
    loaded = load_critic(critic, device=device)
    fitted = None
    if any(e.needs_probe for e in entries):
        if probe is None:
            needing = [e.name for e in entries if e.needs_probe]
            raise ConfigError(f"the {needing} reward needs a probe directory (`probe` / `eval_probe`).")
        from clinalign.probe import LinearProbe

        fitted = LinearProbe.load(probe, critic_name=loaded.name, embed_dim=loaded.embed_dim)
    return [entry.factory(loaded, fitted) for entry in entries]


def _vdc(critic: Any, probe: Any) -> Any:
    from clinalign.rewards.clinical import VDCReward

    return VDCReward(critic)


def _ccs(critic: Any, probe: Any) -> Any:
    from clinalign.rewards.clinical import CCSReward

    return CCSReward(critic)


def _dd(critic: Any, probe: Any) -> Any:
    from clinalign.rewards.clinical import DDReward

    return DDReward(critic, probe)


def _sfs(critic: Any, probe: Any) -> Any:
    from clinalign.rewards.clinical import SFSReward

    return SFSReward(critic)


register_reward("vdc", _vdc, description="cos(E_I(x̂0), E_T(t_ep)): matches its own enriched prompt")
register_reward("ccs", _ccs, needs_checklist=True, description="cos(E_I(x̂0), E_T(t_c)): satisfies the checklist")
register_reward("dd", _dd, needs_probe=True, description="log softmax(φ(E_I(x̂0)))_y with a frozen linear probe")
register_reward("sfs", _sfs, description="cos(E_I(x̂0), E_I(x_r)): anchored to the real reference image")
