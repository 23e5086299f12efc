"""Does every number in the report survive simulation? Synthetic studies through the report's own code path
(`analysis.compare.compare`, `analysis.stats`), one function per claim; prints the measured rates.

    python bench/evidence.py [--reps 2000] [--only fwer,power,...]

Claims (issue 18) and their targets:
- coverage: group 95 % interval on accuracy with ties (277 / 872 rows, seed sd 0.002-0.01, n = 3, 5) >= 0.93
- fwer: chance of any false better/worse claim under the global null <= 0.05 with one group at 2x/3x/5x the
  spread, t3 noise, 10 % collapsed seeds (default paired test; the pooled fit and per-pair Holm for comparison)
- power: share of true differences found, default vs pooled fit vs per-pair Holm (equal spreads)
- models: false-positive rate of cross-model comparisons when each model has its own seed effects <= 0.05
- claims: groups at 0,0,0,M,M,M: chance of any false claim (sign or equivalence) <= 0.05; joint coverage of
  the simultaneous intervals >= 0.95
- settle: at the seeds `seeds_to_settle` recommends from a 3-seed pilot, chance of a verdict >= 0.8
- moderated (issue 30): family-wise error of the paired t, the moderated t and the pooled fit over 28 pairs of 8
  equal groups in every shape of SHAPES (unequal spreads, two noisy groups, gradual spreads, t3 noise, collapsed
  runs, unbalanced seeds, cross-model pairs) at 3, 4, 5, 7 seeds: <= 0.05 where the moderated test is the default
- decided: pairs (of 28) decided on the article's components shape, per procedure; >= 20 at 5 seeds
- sequential: `repeats: {min: 3, max: 10, until: decided}` against 7 fixed seeds: trials used, pairs decided,
  family-wise error over all looks under the null
tests/test_evidence.py runs each claim with fewer replications.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis import stats  # noqa: E402
from analysis.compare import compare  # noqa: E402
from analysis.sequential import Arm, rounds  # noqa: E402

SIGN_CLAIMS = ("better", "worse", "better, within margin", "worse, within margin")
SEED_SD, NOISE_SD, BASE = 0.01, 0.004, 0.85


def noise(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """Unit-variance run noise: normal, t3 (heavy tails), or normal with 10 % collapsed runs (majority class)."""
    if kind == "t3":
        return rng.standard_t(3, size) / np.sqrt(3.0)
    z = rng.normal(0, 1, size)
    if kind == "collapse":
        z = np.where(rng.random(size) < 0.1, (0.509 - BASE) / NOISE_SD, z)  # a run stuck at SST-2's majority class
    return z


def study(rng: np.random.Generator, effects: list[float], seeds: int, scales: list[float] | None = None,
          kind: str = "normal", examples: int | None = None, models: list[str] | None = None,
          counts: list[int] | None = None) -> pd.DataFrame:
    """One synthetic study: value = base + effect + seed block (per model) + scaled noise, rounded to 1/examples;
    group g runs its first counts[g] seeds (default: all `seeds`)."""
    scales = scales or [1.0] * len(effects)
    models = models or ["m"] * len(effects)
    counts = counts or [seeds] * len(effects)
    blocks = {m: rng.normal(0, SEED_SD, max(counts)) for m in sorted(set(models))}
    parts = []
    for g, (eff, scale, model, n) in enumerate(zip(effects, scales, models, counts)):
        v = BASE + eff + blocks[model][:n] + NOISE_SD * scale * noise(rng, n, kind)
        if examples:
            v = np.round(v * examples) / examples
        parts.append(pd.DataFrame({"group": f"g{g}", "seed": 42 + np.arange(n), "value": v, "model_key": model,
                                   "data_key": "d", "resolution": 1 / examples if examples else np.nan}))
    return pd.concat(parts, ignore_index=True)


# Study shapes for the family-wise error (all groups equal) of the moderated test, 8 groups (28 pairs) as in the
# article's components study: name -> study() keywords, given the seeds per group.
G = 8
SHAPES = {
    "equal spreads": lambda n: {},
    "one group 2x": lambda n: {"scales": [2.0] + [1.0] * (G - 1)},
    "one group 3x": lambda n: {"scales": [3.0] + [1.0] * (G - 1)},
    "one group 5x": lambda n: {"scales": [5.0] + [1.0] * (G - 1)},
    "two groups 3x": lambda n: {"scales": [3.0, 3.0] + [1.0] * (G - 2)},
    "two groups 5x": lambda n: {"scales": [5.0, 5.0] + [1.0] * (G - 2)},
    "spreads 1x..3x": lambda n: {"scales": list(np.linspace(1, 3, G))},
    "spreads 1x..5x": lambda n: {"scales": list(np.linspace(1, 5, G))},
    "t3 noise": lambda n: {"kind": "t3"},
    "collapsed runs": lambda n: {"kind": "collapse", "examples": 872},
    "unbalanced seeds": lambda n: {"counts": [n + 3 * (g % 2) for g in range(G)]},
    "cross-model pairs": lambda n: {"models": ["A"] * (G // 2) + ["B"] * (G // 2)},
}
# The article's components study (all, up, down, o, v, k, q, classifier only): its means and run spreads.
COMPONENTS = [0.833, 0.821, 0.820, 0.809, 0.805, 0.794, 0.790, 0.715]
COMPONENT_SCALES = [1.0] * 7 + [2.0]
PROCEDURES = {"paired t": {"test": "paired"}, "moderated": {"test": "moderated"}, "pooled fit": {"test": "blocked"}}


def family_error(reps: int, seeds: int, shape: str, procedures: dict[str, dict], seed: int = 0) -> dict[str, float]:
    """Chance of >= 1 false better/worse claim over the 28 pairs of 8 equal groups of `shape`, per procedure
    (name -> compare() keywords), all on the same simulated studies."""
    rng = np.random.default_rng(seed)
    effects = {f"g{g}": 0.0 for g in range(G)}
    any_false = dict.fromkeys(procedures, 0)
    for _ in range(reps):
        df = study(rng, [0.0] * G, seeds, **SHAPES[shape](seeds))
        for name, kw in procedures.items():
            res, _ = compare(df, "val_accuracy", plans=False, **kw)
            any_false[name] += _false_sign(res, effects) > 0
    return {m: k / reps for m, k in any_false.items()}


def decided(reps: int, seeds: int, procedures: dict[str, dict], seed: int = 0) -> dict[str, float]:
    """Mean pairs (of 28) called better/worse with the right sign, and the chance of any wrong sign, on the shape
    of the article's components study (every pair truly different), per procedure."""
    rng = np.random.default_rng(seed)
    effects = {f"g{g}": m - COMPONENTS[0] for g, m in enumerate(COMPONENTS)}
    right, wrong = dict.fromkeys(procedures, 0), dict.fromkeys(procedures, 0)
    for _ in range(reps):
        df = study(rng, list(effects.values()), seeds, COMPONENT_SCALES)
        for name, kw in procedures.items():
            res, _ = compare(df, "val_accuracy", plans=False, **kw)
            bad = _false_sign(res, effects)
            right[name] += int(res["verdict"].isin(SIGN_CLAIMS).sum()) - bad
            wrong[name] += bad > 0
    return {**{f"{m} decided": k / reps for m, k in right.items()}, **{f"{m} any wrong sign": k / reps
                                                                       for m, k in wrong.items()}}


def sequential(reps: int, effects: list[float], low: int = 3, high: int = 10, scales: list[float] | None = None,
               fixed: int = 7, seed: int = 0) -> dict[str, float]:
    """`repeats: {min: low, max: high, until: decided}` through the searcher's own rule (analysis.sequential.rounds)
    against a fixed design of `fixed` seeds, on the same simulated runs: mean trials, pairs called with the right
    sign (all, and against g0: the rule's target when g0 is best), and the chance of any wrong claim (under
    all-equal effects: the family-wise error over all looks)."""
    rng = np.random.default_rng(seed)
    truth = {f"g{g}": e for g, e in enumerate(effects)}
    looks = high - low + 1
    out = {f"{d} {k}": 0 for d in ("decided", "fixed") for k in ("trials", "pairs", "vs g0", "any false")}
    for _ in range(reps):
        full = study(rng, effects, max(high, fixed), scales).set_index(["group", "seed"])["value"]
        arms = [Arm(g, tuple(42 + np.arange(high)), low) for g in truth]
        counts = rounds(arms, lambda g, s: full[(g, s)], "val_accuracy", 0.05, looks)
        seq = pd.DataFrame([(g, 42 + k, full[(g, 42 + k)]) for g, n in counts.items() for k in range(n)],
                           columns=["group", "seed", "value"])
        fix = full.reset_index()[lambda d: d["seed"] < 42 + fixed]
        for name, values, kw in (("decided", seq, {"looks": looks}), ("fixed", fix, {})):
            res, _ = compare(values, "val_accuracy", plans=False, **kw)
            bad = _false_sign(res, truth)
            out[f"{name} trials"] += len(values)
            called = res["verdict"].isin(SIGN_CLAIMS)
            out[f"{name} pairs"] += int(called.sum()) - bad
            out[f"{name} vs g0"] += int((called & ((res["a"] == "g0") | (res["b"] == "g0"))).sum())
            out[f"{name} any false"] += bad > 0
    return {k: v / reps for k, v in out.items()}


def coverage(reps: int, n: int, examples: int, sd: float, seed: int = 0) -> tuple[float, float]:
    """(coverage of the shown 95 % group interval, share of groups that get one) for accuracy rounded to rows."""
    rng = np.random.default_rng(seed)
    hits = shown = 0
    for _ in range(reps):
        mu = 0.7 + rng.uniform(0, 1 / examples)  # the true mean anywhere between two steps
        v = np.round(rng.normal(mu, sd, n) * examples) / examples
        lo, hi = stats.t_interval(v, resolution=1 / examples)
        if lo == lo:
            shown += 1
            hits += lo <= mu <= hi
    return hits / max(shown, 1), shown / reps


def _false_sign(res: pd.DataFrame, effects: dict[str, float], column: str = "verdict") -> int:
    """Comparisons whose sign claim is false (equal groups called different, or the wrong way round)."""
    bad = 0
    for _, r in res.iterrows():
        if r[column] in SIGN_CLAIMS:
            truth = effects[r["a"]] - effects[r["b"]]
            bad += truth == 0 or (truth > 0) != r[column].startswith("better")
    return bad


def _holm_claims(res: pd.DataFrame, alpha: float = 0.05) -> pd.Series:
    """Per-pair tests with Holm over the same family: the heteroscedasticity-proof baseline."""
    adj = stats.holm(res["p"].tolist())
    return pd.Series([("better" if d > 0 else "worse") if p < alpha else "inconclusive"
                      for p, d in zip(adj, res["delta"])], index=res.index)


def fwer(reps: int, seeds: int, scale: float = 1.0, kind: str = "normal", groups: int = 5, seed: int = 0,
         methods: tuple[str, ...] = ("paired", "holm", "blocked")) -> dict[str, float]:
    """Chance of >= 1 false better/worse claim over all pairs, all groups equal, g0's spread x `scale`."""
    rng = np.random.default_rng(seed)
    effects = {f"g{g}": 0.0 for g in range(groups)}
    any_false = dict.fromkeys(methods, 0)
    for _ in range(reps):
        df = study(rng, [0.0] * groups, seeds, [scale] + [1.0] * (groups - 1), kind)
        if "paired" in methods or "holm" in methods:
            res, _ = compare(df, "val_accuracy", test="paired")
            if "paired" in methods:
                any_false["paired"] += _false_sign(res, effects) > 0
            if "holm" in methods:
                any_false["holm"] += _false_sign(res.assign(holm=_holm_claims(res)), effects, "holm") > 0
        if "blocked" in methods:
            res, _ = compare(df, "val_accuracy", test="blocked")
            any_false["blocked"] += _false_sign(res, effects) > 0
    return {m: k / reps for m, k in any_false.items()}


def power(reps: int, seeds: int, effect: float = 0.012, groups: int = 5, seed: int = 0) -> dict[str, float]:
    """Share of the truly different pairs (g0 is `effect` better than all others) called better, per method."""
    rng = np.random.default_rng(seed)
    effs = [effect] + [0.0] * (groups - 1)
    found = {"paired": 0, "holm": 0, "blocked": 0}
    for _ in range(reps):
        df = study(rng, effs, seeds)
        res, _ = compare(df, "val_accuracy", test="paired")
        true = (res["a"] == "g0") | (res["b"] == "g0")
        found["paired"] += int((res["verdict"][true].isin(SIGN_CLAIMS)).sum())
        found["holm"] += int((_holm_claims(res)[true] != "inconclusive").sum())
        res_b, _ = compare(df, "val_accuracy", test="blocked")
        true_b = (res_b["a"] == "g0") | (res_b["b"] == "g0")
        found["blocked"] += int((res_b["verdict"][true_b].isin(SIGN_CLAIMS)).sum())
    return {m: k / (reps * (groups - 1)) for m, k in found.items()}


def models(reps: int, seeds: int = 3, seed: int = 0) -> float:
    """False-positive rate of the cross-model comparisons (2 models x 2 groups, all equal, own seed effects)."""
    rng = np.random.default_rng(seed)
    false = total = 0
    for _ in range(reps):
        df = study(rng, [0.0] * 4, seeds, models=["A", "A", "B", "B"])
        res, _ = compare(df, "val_accuracy", alpha=0.05)
        cross = res[res["pairing"].str.contains("different models")]
        false += int(cross["verdict"].isin(SIGN_CLAIMS).sum())
        total += len(cross)
    return false / max(total, 1)


def claims(reps: int, seeds: int = 5, step: float = 0.02, margin: float = 0.005, seed: int = 0) -> dict[str, float]:
    """Groups at 0,0,0,M,M,M: chance of any false claim (sign or equivalence) and joint coverage of the intervals."""
    rng = np.random.default_rng(seed)
    effs = [0.0, 0.0, 0.0, step, step, step]
    effects = {f"g{g}": e for g, e in enumerate(effs)}
    any_false = all_cover = contradictions = 0
    for _ in range(reps):
        res, _ = compare(study(rng, effs, seeds), "val_accuracy", margin=margin)
        truth = np.array([effects[a] - effects[b] for a, b in zip(res["a"], res["b"])])
        false_eq = (res["verdict"].str.contains("equivalent|within margin") & (np.abs(truth) >= margin)).sum()
        any_false += (_false_sign(res, effects) + false_eq) > 0
        all_cover += bool(((res["ci_low"] <= truth) & (truth <= res["ci_high"])).all())
        excludes = (res["ci_low"] > 0) | (res["ci_high"] < 0)
        contradictions += int((excludes != res["verdict"].isin(SIGN_CLAIMS)).sum())
    return {"any_false_claim": any_false / reps, "joint_coverage": all_cover / reps,
            "verdicts_contradicting_interval": contradictions}


def settle(reps: int, effect: float = 0.0, groups: int = 2, pilot: int = 3, margin: float = 0.005,
           seed: int = 0) -> dict[str, float]:
    """From inconclusive 3-seed pilots: the chance that a study at `seeds_to_settle` reaches a verdict, and (for a
    real effect) that one at `seeds_to_detect` finds it with the right sign; with the median recommendations."""
    rng = np.random.default_rng(seed)
    effs = [effect] + [0.0] * (groups - 1)
    reached, detected, settle_n, detect_n = 0, 0, [], []
    for _ in range(reps):
        res, _ = compare(study(rng, effs, pilot), "val_accuracy", margin=margin)
        first = res.iloc[0]
        if first["verdict"] != "inconclusive":
            continue  # a verdict already: nothing to plan
        if pd.notna(first["seeds_to_settle"]):
            settle_n.append(int(first["seeds_to_settle"]))
            res_n, _ = compare(study(rng, effs, settle_n[-1]), "val_accuracy", margin=margin)
            reached += res_n.iloc[0]["verdict"] not in ("inconclusive", "undetermined")
        if effect and pd.notna(first["seeds_to_detect"]):
            detect_n.append(int(first["seeds_to_detect"]))
            res_n, _ = compare(study(rng, effs, detect_n[-1]), "val_accuracy", margin=margin)
            r = res_n.iloc[0]
            detected += r["verdict"] in SIGN_CLAIMS and (r["a"] == "g0") == r["verdict"].startswith("better")
    median = lambda xs: float(np.median(xs)) if xs else float("nan")  # noqa: E731
    return {"settled": reached / max(len(settle_n), 1), "settle_seeds": median(settle_n),
            "detected": detected / max(len(detect_n), 1), "detect_seeds": median(detect_n)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=2000)
    p.add_argument("--only", default="coverage,fwer,power,models,claims,settle,moderated,decided,sequential")
    p.add_argument("--seeds", default="2,3,4,5,7", help="seeds per group for the moderated, decided tables")
    p.add_argument("--seed", type=int, default=0, help="the simulations' random seed (independent runs combine)")
    args = p.parse_args(argv)
    only, reps = set(args.only.split(",")), args.reps
    start = time.time()
    if "coverage" in only:
        for examples in (277, 872):
            for sd in (0.002, 0.005, 0.01):
                for n in (3, 5):
                    cov, shown = coverage(reps, n, examples, sd)
                    print(f"coverage  rows={examples} sd={sd} n={n}: {cov:.3f} (interval shown for {shown:.0%})")
    if "fwer" in only:
        for kind, scale in (("normal", 1), ("normal", 2), ("normal", 3), ("normal", 5), ("t3", 1), ("collapse", 1)):
            for seeds in (3, 5):
                rates = fwer(reps, seeds, scale, kind)
                print(f"fwer      {kind} g0 spread x{scale} seeds={seeds}: " +
                      ", ".join(f"{m} {r:.3f}" for m, r in rates.items()))
    if "power" in only:
        for seeds in (3, 5):
            print(f"power     effect 0.012 seeds={seeds}: " +
                  ", ".join(f"{m} {r:.3f}" for m, r in power(reps, seeds).items()))
    if "models" in only:
        for seeds in (3, 5):
            print(f"models    cross-model false-positive rate, seeds={seeds}: {models(reps, seeds):.3f}")
    if "claims" in only:
        out = claims(reps)
        print("claims    0,0,0,M,M,M (M = 0.02, 5 seeds): " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
        out = claims(reps, step=0.003)
        print("claims    0,0,0,M,M,M (M = 0.003, 5 seeds): " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
    if "settle" in only:
        for effect in (0.0, 0.003, 0.01, 0.02):
            out = settle(max(reps // 4, 50), effect)
            print(f"settle    true Δ={effect}: a verdict at seeds_to_settle {out['settled']:.3f} (median "
                  f"{out['settle_seeds']:.0f} seeds)" + (f"; found at seeds_to_detect {out['detected']:.3f} (median "
                                                         f"{out['detect_seeds']:.0f})" if effect else ""))
    seeds_list = [int(x) for x in args.seeds.split(",")]
    if "moderated" in only:
        print("family-wise error, 8 equal groups, all 28 pairs: " + " | ".join(PROCEDURES))
        for seeds in seeds_list:
            for shape in SHAPES:
                rates = family_error(reps, seeds, shape, PROCEDURES, seed=args.seed)
                print(f"moderated seeds={seeds} {shape}: " + ", ".join(f"{m} {r:.3f}" for m, r in rates.items()))
    if "decided" in only:
        for seeds in seeds_list:
            out = decided(reps, seeds, PROCEDURES, seed=args.seed)
            print(f"decided   components shape, seeds={seeds}: " + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
    if "sequential" in only:
        shape = [m - COMPONENTS[0] for m in COMPONENTS]
        for name, effects, scales in (("components", shape, COMPONENT_SCALES), ("null", [0.0] * G, None)):
            out = sequential(max(reps // 4, 50), effects, scales=scales, seed=args.seed)
            print(f"sequential {name} (min 3, max 10, until decided vs 7 fixed seeds): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
    print(f"({reps} replications, {time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
