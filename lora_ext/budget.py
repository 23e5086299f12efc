"""Ranks for a parameter budget: for one placement, the LoRA ranks whose adapters train as close to N parameters as
integer ranks allow (the head, trained in full by every placement, is not counted).

Each adapted module costs `per_rank * r + fixed` parameters: LoRA's A and B grow with r, DoRA's magnitude vector
does not. Both are read from PEFT itself on the meta device (the placement applied at r=1 and r=2, every LoRA
module's own `lora_*` parameters counted), so fused projections (ModernBERT's `Wqkv`), Llama's `up` (two modules
per layer) and any method PEFT builds are counted as PEFT trains them. One rank `r` for every module where that
lands within `UNIFORM_TOLERANCE` of N and within one module's step; otherwise `r` and, through PEFT's
`rank_pattern`, r + 1 on as many modules as bring the total nearest N (largest steps first, spread evenly over the
layers): never further from N than one module's rank step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from record.errors import InputError

from .placement import Placement

UNIFORM_TOLERANCE = 0.005  # a uniform rank within 0.5 % of the budget is kept as it is (no rank_pattern)


@dataclass(frozen=True)
class ModuleCost:
    """What one adapted module (a component in one layer, e.g. `up@3`) trains: per_rank * r + fixed."""

    key: str
    per_rank: int
    fixed: int


@dataclass(frozen=True)
class BudgetRanks:
    """The ranks a budget gives one placement, and what they train exactly (head excluded)."""

    budget: int
    r: int
    rank_pattern: tuple[tuple[str, int], ...]  # module keys (`q@3`) trained at r + 1
    adapter_params: int
    step: int  # the largest rank step of one module: |adapter_params - budget| never exceeds it

    @property
    def distance(self) -> int:
        """Trained minus budget: negative below it, positive above."""
        return self.adapter_params - self.budget


def module_costs(model_config, placement: Placement) -> list[ModuleCost]:
    """Each adapted (component, layer)'s cost, counted on PEFT's own modules at r=1 and r=2 on the meta device."""
    one, two = (_lora_params_by_key(model_config, replace(placement, r=r, rank_pattern=())) for r in (1, 2))
    return [ModuleCost(key, two[key] - one[key], 2 * one[key] - two[key]) for key in one]


def _lora_params_by_key(model_config, placement: Placement) -> dict[str, int]:
    import torch
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForSequenceClassification

    from .adapt import apply_placement
    from .architectures import architecture_for

    arch = architecture_for(model_config.model_type)
    with torch.device("meta"):
        model = apply_placement(AutoModelForSequenceClassification.from_config(model_config), placement,
                                initialise=False)
    out: dict[str, int] = {}
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        key = arch.module_key_of(name, placement.components)
        own = sum(p.numel() for n, p in module.named_parameters() if n.split(".")[0].startswith("lora_"))
        out[key] = out.get(key, 0) + own
    return out


def ranks_for_budget(costs: list[ModuleCost], budget: int, field: str = "budget") -> BudgetRanks:
    """The ranks whose total cost is nearest `budget` (see the module docstring); InputError when even r=1 on every
    module costs more than the budget."""
    per_rank = sum(c.per_rank for c in costs)
    fixed = sum(c.fixed for c in costs)
    step = max((c.per_rank for c in costs), default=0)
    if not costs or per_rank <= 0:
        raise InputError(field, "the placement adapts no module with a rank", got=budget)
    if budget < fixed + per_rank:
        raise InputError(field, f"{budget:,} is below what this placement trains at r=1 ({fixed + per_rank:,} "
                         "parameters)", got=budget, allowed=f"a budget >= {fixed + per_rank:,}, or fewer modules")
    r = (budget - fixed) // per_rank
    rest = budget - fixed - r * per_rank  # 0 <= rest < per_rank
    uniform = min((r, r + 1), key=lambda k: abs(budget - fixed - k * per_rank))
    if abs(budget - fixed - uniform * per_rank) <= min(UNIFORM_TOLERANCE * budget, step):
        return BudgetRanks(budget, uniform, (), fixed + uniform * per_rank, step)
    # r + 1 on modules, largest steps first, while the total stays at or under the budget; every module left out
    # then costs more than what is left (so does the smallest), and one more of those may come nearer from above.
    # Modules of one cost are interchangeable for the count: those that get r + 1 are spread evenly over the
    # placement's layers (never bunched in the first ones, which would favour lower layers in a study of where).
    chosen, added = [], 0
    for per in sorted({c.per_rank for c in costs}, reverse=True):
        same = [c for c in costs if c.per_rank == per]
        take = min(len(same), (rest - added) // per)
        chosen += spread(same, take)
        added += take * per
    left = [c for c in costs if c not in chosen]
    cheapest = min(c.per_rank for c in left)
    if added + cheapest - rest < rest - added:
        chosen += spread([c for c in left if c.per_rank == cheapest], 1)
        added += cheapest
    order = {c.key: i for i, c in enumerate(costs)}
    pattern = tuple((c.key, r + 1) for c in sorted(chosen, key=lambda c: order[c.key]))
    return BudgetRanks(budget, r, pattern, fixed + r * per_rank + added, step)


def spread(items: list, k: int) -> list:
    """k of `items` at evenly spaced positions (the middle one for k = 1): r + 1 across the depth, not bunched."""
    n = len(items)
    return [items[(2 * i + 1) * n // (2 * k)] for i in range(k)] if k > 0 else []


def budget_ranks(model_config, placement: Placement, budget: int, field: str = "budget") -> BudgetRanks:
    """`ranks_for_budget` of the placement's modules on this model (a transformers config)."""
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InputError(field, "must be a positive whole number of parameters", got=budget,
                         allowed="e.g. 300000 (the adapters' trainable parameters, head excluded)")
    return ranks_for_budget(module_costs(model_config, placement), budget, field)


__all__ = ["BudgetRanks", "ModuleCost", "budget_ranks", "module_costs", "ranks_for_budget"]
