"""Writes a run's result: ``<mode>.json`` (everything), ``<mode>.md`` (the tables) and
``<mode>.png`` (latency percentiles vs offered load; throughput vs workers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["GOALS", "goals", "markdown", "plot", "write_results"]

GOALS = {
    "peer_ratio": 1.0,
    "floor_ratio": 3.0,
    "capacity_one_worker": 2500.0,
    "p99_ms_at_1000": 25.0,
    "idle_p50_ms": 5.0,
}
"""Issue 11's goals: CPU per decision <= the peer's signed path (stretch: <= 3 x the
libsodium floor), one worker >= 2,500 decided intents/s, p99 <= 25 ms at 1,000/s and
idle p50 <= 5 ms; two workers' scaling is reported with the machine's CPU budget."""


def _workers(n: int) -> str:
    return f"{n} worker{'s' * (n > 1)}"


def _label(scenario: dict[str, Any]) -> str:
    return f"gate, {_workers(scenario['workers'])}"


def _phase(phases: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((p for p in phases if p["name"] == name), None)


def capacity(phases: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The saturated phase with the most decided intents/s: the maximum-rate phase or a
    fixed-rate phase the setup could not sustain (on a shared 2-core machine either can
    be hit by other work; the best of them is the least disturbed)."""
    saturated = [
        p for p in phases if p["name"] == "max" or (p["offered_rate"] and not p["sustained"])
    ]
    return max(saturated, key=lambda p: p["throughput"], default=None)


def _row(goal: str, target: str, measured: str, met: bool, gap: str) -> dict[str, Any]:
    return {"goal": goal, "target": target, "measured": measured, "met": met, "gap": gap}


def _at_rate(phases: list[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    return next(
        (p for p in phases if p["offered_rate"] and abs(p["offered_rate"] - rate) < 0.5), None
    )


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of the issue with the measured value and how far it is."""
    rows: list[dict[str, Any]] = []
    side = result.get("side_by_side") or {}
    if "peer_ratio" in side:
        ratio = side["peer_ratio"]
        rows.append(
            _row(
                "CPU per decision / the peer's signed path (in process, same run)",
                f"<= {GOALS['peer_ratio']:g}",
                f"{side['gate_us']:,.0f} / {side['peer']['signed_us']:,.0f} µs = x{ratio:.2f}",
                ratio <= GOALS["peer_ratio"],
                f"x{ratio / GOALS['peer_ratio']:.2f} over" if ratio > GOALS["peer_ratio"] else "",
            )
        )
    elif side:
        rows.append(
            _row(
                "CPU per decision / the peer's signed path",
                f"<= {GOALS['peer_ratio']:g}",
                f"not measured: {side.get('peer_error', '')}",
                False,
                "",
            )
        )
    if side:
        ratio = side["floor_ratio"]
        rows.append(
            _row(
                "CPU per decision / the libsodium crypto floor (stretch)",
                f"<= {GOALS['floor_ratio']:g} x {side['floor_us']:.0f} µs = "
                f"{GOALS['floor_ratio'] * side['floor_us']:.0f} µs",
                f"{side['gate_us']:,.0f} µs = x{ratio:.1f}",
                ratio <= GOALS["floor_ratio"],
                f"x{ratio / GOALS['floor_ratio']:.1f} over" if ratio > GOALS["floor_ratio"] else "",
            )
        )
    scenarios = {s["workers"]: s for s in result.get("gate", []) if s.get("phases")}
    one = scenarios.get(1)
    if one is not None:
        top = capacity(one["phases"])
        if top is not None:
            rate = top["throughput"]
            target = GOALS["capacity_one_worker"]
            cpu = top["cpu_us_per_intent"]
            rows.append(
                _row(
                    "capacity, 1 worker (decided intents/s)",
                    f">= {target:,.0f}",
                    f"{rate:,.0f} (CPU per intent: worker {cpu.get('workers', 0):,.0f} µs "
                    f"+ broker {cpu.get('broker', 0):,.0f} µs)",
                    rate >= target,
                    f"x{target / rate:.1f} short" if 0 < rate < target else "",
                )
            )
        at_1000 = _at_rate(one["phases"], 1000.0)
        if at_1000 is not None:
            p99 = at_1000["latency"]["p99_ms"]
            rows.append(
                _row(
                    "p99 at 1,000 intents/s, 1 worker",
                    f"<= {GOALS['p99_ms_at_1000']:g} ms",
                    f"{p99:,.1f} ms" + ("" if at_1000["sustained"] else " (not sustained)"),
                    p99 <= GOALS["p99_ms_at_1000"] and at_1000["sustained"],
                    f"x{p99 / GOALS['p99_ms_at_1000']:.1f} over"
                    if p99 > GOALS["p99_ms_at_1000"]
                    else "",
                )
            )
        idle = min(
            (p for p in one["phases"] if p["offered_rate"]),
            key=lambda p: p["offered_rate"],
            default=None,
        )
        if idle is not None:
            p50 = idle["latency"]["p50_ms"]
            rows.append(
                _row(
                    f"idle p50 ({_rate(idle)}, each intent alone), 1 worker",
                    f"<= {GOALS['idle_p50_ms']:g} ms",
                    f"{p50:,.1f} ms",
                    p50 <= GOALS["idle_p50_ms"],
                    f"x{p50 / GOALS['idle_p50_ms']:.1f} over" if p50 > GOALS["idle_p50_ms"] else "",
                )
            )
    two = scenarios.get(2)
    if one is not None and two is not None:
        top1, top2 = capacity(one["phases"]), capacity(two["phases"])
        if top1 is not None and top2 is not None and top1["throughput"]:
            ratio = top2["throughput"] / top1["throughput"]
            busy = top2.get("machine_busy_cpus", 0.0)
            rows.append(
                _row(
                    "2 workers / 1 worker capacity",
                    "scales (reported)",
                    f"x{ratio:.2f}; machine CPUs busy {busy:.2f} of {result['machine']['cpus']}",
                    ratio > 1.0,
                    "the CPUs are the budget" if busy >= 0.9 * result["machine"]["cpus"] else "",
                )
            )
    return rows


def _mix(outcomes: dict[str, int]) -> str:
    total = sum(outcomes.values()) or 1
    parts = [f"{k} {v / total:.1%}" for k, v in outcomes.items() if v]
    return ", ".join(parts)


def _rate(phase: dict[str, Any]) -> str:
    return "max" if not phase["offered_rate"] else f"{phase['offered_rate']:,.0f}/s"


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    w = result["workload"]
    floor = result["crypto_floor"]
    inproc = result["gate_in_process"]
    lines = [
        f"# trustplane benchmark: {result['mode']} run `{result['run_id']}` "
        f"({result['started_at']})",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model'] or 'unknown model'}), Python {m['python']}, "
        f"confluent-kafka {m['confluent_kafka']}; the broker, the workers, the load generator "
        f"and the collector all share it. Load average at start: "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}. Run time "
        f"{result.get('elapsed_s', 0):.0f} s.",
        "",
        f"Workload: {w['agents']:,} agents ("
        + ", ".join(f"{n} {r}" for r, n in w["roles"].items())
        + f"), each with its own Ed25519 key and registered runtime; {w['intents_signed']:,} "
        f"intents pre-signed ({w['sign_encode_us_per_intent']:.0f} µs each, before any timed "
        f"phase), {w['mean_intent_bytes']:.0f} bytes on average. The anomaly thresholds hold up "
        f"to {w['anomaly_safe_rate']:,.0f} decided intents/s ({w['anomaly_binding']} binds first).",
        "",
        "## Reference points (CPU per intent, no Kafka)",
        "",
        "| reference | CPU µs / intent |",
        "|---|---:|",
        f"| crypto floor: 1 Ed25519 verify ({floor['verify_us']:.0f} µs) + 1 sign "
        f"({floor['sign_us']:.0f} µs) | {floor['cpu_us_per_intent']:.0f} |",
        f"| the whole gate in process (every layer, signed approval, lineage, Avro) | "
        f"{inproc['cpu_us_per_intent']:.0f} |",
        *_side_lines(result.get("side_by_side") or {}),
        f"| + the per-transaction state write (JSON of each touched agent, "
        f"{inproc['state_bytes_per_intent']:.0f} B/intent) | "
        f"{inproc['state_write_us_per_intent']:.0f} |",
        "",
        "## End to end on the broker (publish → outcome at a read_committed consumer)",
        "",
        "| setup | offered | decided/s | sustained | p50 ms | p95 ms | p99 ms | p99.9 ms "
        "| worker CPU µs/intent | × floor | broker CPU µs/intent | other load (CPUs) | outcomes |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    fl = float(floor["cpu_us_per_intent"]) or 1.0

    def row(label: str, p: dict[str, Any]) -> str:
        lat = p["latency"]
        cpu = p["cpu_us_per_intent"]
        cells = [
            label,
            _rate(p),
            f"{p['throughput']:,.0f}",
            "yes" if p["sustained"] else "**no**",
            *(f"{lat[f'{q}_ms']:,.1f}" for q in ("p50", "p95", "p99", "p99.9")),
            f"{cpu.get('workers', 0):,.0f}",
            f"{cpu.get('workers', 0) / fl:.1f}",
            f"{cpu.get('broker', 0):,.0f}",
            f"{p.get('other_busy_cpus', 0.0):.2f}",
            _mix(p["outcomes"]),
        ]
        return "| " + " | ".join(cells) + " |"

    def ordered(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = [p for p in phases if p["name"] != "warmup"]
        return sorted(kept, key=lambda p: (p["offered_rate"] is None, p["offered_rate"] or 0))

    for base in result.get("baselines", []):
        for p in ordered(base["phases"]):
            lines.append(row(f"raw loop, {base['mode']}", p))
    for scenario in result.get("gate", []):
        if scenario.get("error"):
            lines.append(f"| {_label(scenario)} | FAILED: {scenario['error'][:200]} |")
        for p in ordered(scenario["phases"]):
            lines.append(row(_label(scenario), p))
    lines += [
        "",
        "Latency at maximum rate is mostly queueing (every intent is published at once); "
        "read it with the throughput. CPU µs per intent is the process CPU time of the "
        "worker process(es) (raw loop: its process) during the phase, divided by the "
        "intents decided. Fixed-rate phases below saturation include idle polling. Other "
        "load: CPUs busy with processes that are not part of the run (other work on the "
        "machine: noise). Raw loop rows: the same pre-signed intents copied from one "
        "topic to another with no work, same partitions, same client settings as the "
        "gate worker (txn: its batching and one transaction per batch).",
        "",
    ]
    gate = result.get("gate", [])
    tops = [
        (scenario["workers"], top)
        for scenario in gate
        if (top := capacity(scenario["phases"])) is not None
    ]
    if len(tops) > 1:
        lines += [
            "## Scaling (capacity: the best saturated phase)",
            "",
            "| workers | phase | decided/s | × 1 worker | worker CPU µs/intent "
            "| machine CPUs busy (of 2) |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        first = tops[0][1]["throughput"] or 1.0
        for n, p in tops:
            lines.append(
                f"| {n} | {_rate(p)} | {p['throughput']:,.0f} | "
                f"{p['throughput'] / first:.2f} | "
                f"{p['cpu_us_per_intent'].get('workers', 0):,.0f} | "
                f"{p.get('machine_busy_cpus', 0.0):.2f} |"
            )
        lines.append("")
    lines += ["## Goals", "", "| goal | target | measured | met | gap |", "|---|---|---|---|---|"]
    for g in goals(result):
        met = "yes" if g["met"] else "**no**"
        lines.append(f"| {g['goal']} | {g['target']} | {g['measured']} | {met} | {g['gap']} |")
    lines += ["", "## Where a worker's time goes", ""]
    stages = inproc.get("stages") or {}
    if stages:
        total = sum(stages.values()) or 1.0
        lines += [
            "In process (cProfile, cumulative µs per intent; the profiler inflates absolute "
            "numbers, read the shares):",
            "",
            "| stage | µs / intent (profiled) | share |",
            "|---|---:|---:|",
        ]
        for stage, us in sorted(stages.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {stage} | {us:,.0f} | {us / total:.0%} |")
        lines.append("")
    profile = result.get("profile")
    if profile:
        lines += _profile_lines(profile)
    odd = [(s["workers"], p) for s in gate for p in s["phases"] if p.get("samples")]
    if odd:
        lines += ["## Not approved (samples)", ""]
        for n, p in odd[:3]:
            for sample in p["samples"][:5]:
                lines.append(f"- {n} worker(s), {p['name']}: {json.dumps(sample)[:300]}")
        lines.append("")
    return "\n".join(lines)


def _side_lines(side: dict[str, Any]) -> list[str]:
    if not side:
        return []
    rounds = side["rounds"]
    lines = [
        f"| side by side, median of {rounds} interleaved rounds: the gate in process | "
        f"{side['gate_us']:.0f} |",
        f"| side by side: the crypto floor (libsodium verify + sign) | {side['floor_us']:.0f} |",
    ]
    peer = side.get("peer")
    if peer:
        name = f"{peer.get('package', 'peer')} {peer.get('version', '')}".strip()
        lines += [
            f"| side by side: {name}, full stack (rules, trust, ring, hash-chained audit) | "
            f"{peer['full_stack_us']:.0f} |",
            f"| side by side: {name}, signed (+ Ed25519 verify of the request, HMAC-signed "
            f"audit) | {peer['signed_us']:.0f} |",
        ]
    else:
        lines.append(f"| the peer | not measured: {side.get('peer_error', '')} |")
    return lines


def _profile_lines(profile: dict[str, Any]) -> list[str]:
    phase = profile["phase"]
    lines = [
        f"py-spy on one worker at maximum rate ({phase['throughput']:,.0f} decided/s while "
        f"profiled, {phase['cpu_us_per_intent'].get('workers', 0):,.0f} µs CPU per intent):",
        "",
    ]
    for view in ("cpu", "wall"):
        data = profile.get(view)
        if not data:
            continue
        if "threads" not in data:
            lines += [f"- {view}: {data.get('error', 'no profile')}", ""]
            continue
        threads = ", ".join(
            f"`{name}` {t['share']:.0%}"
            for name, t in data["threads"].items()
            if t["share"] >= 0.01
        )
        lines += [f"{data.get('view', view)}: {data['samples']:,} samples ({threads})", ""]
        gate_thread = data["threads"].get("gate-worker")
        if not gate_thread:
            continue
        inclusive = dict(gate_thread["top_inclusive"])
        lines += [
            f"| gate-worker thread, {view}: function | own | inclusive |",
            "|---|---:|---:|",
        ]
        for function, share in gate_thread["top_own"][:12]:
            shown = inclusive.get(function)
            lines.append(
                f"| `{function}` | {share:.1%} | {'' if shown is None else f'{shown:.1%}'} |"
            )
        lines += [
            "",
            f"| gate-worker thread, {view}: inclusive | share |",
            "|---|---:|",
        ]
        for function, share in gate_thread["top_inclusive"][:25]:
            lines.append(f"| `{function}` | {share:.1%} |")
        lines.append("")
    return lines


def plot(result: dict[str, Any], path: Path) -> bool:
    """Latency percentiles vs offered load, throughput vs workers. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = [g for g in result.get("gate", []) if any(p["offered_rate"] for p in g["phases"])]
    panels = max(1, len(scenarios))
    fig = plt.figure(figsize=(4.2 * max(panels, 3), 9))
    grid = fig.add_gridspec(2, panels)
    styles = {"p50": "-", "p95": "--", "p99": "-.", "p99.9": ":"}
    first = None
    for n, scenario in enumerate(scenarios):
        ax = fig.add_subplot(grid[0, n], sharey=first)
        first = first or ax
        fixed = sorted(
            (p for p in scenario["phases"] if p["offered_rate"]), key=lambda p: p["offered_rate"]
        )
        x = [p["offered_rate"] for p in fixed]
        for name, style in styles.items():
            ax.plot(x, [p["latency"][f"{name}_ms"] for p in fixed], style, marker="o", label=name)
        for base in result.get("baselines", []):
            for p in base["phases"]:
                if p["offered_rate"]:
                    ax.scatter(
                        [p["offered_rate"]], [p["latency"]["p99_ms"]], marker="x", color="gray"
                    )
                    ax.annotate(
                        f"raw {base['mode']} p99",
                        (p["offered_rate"], p["latency"]["p99_ms"]),
                        fontsize=7,
                        color="gray",
                    )
        ax.axhline(25, color="black", linewidth=0.8, linestyle="--")
        ax.annotate("goal: p99 ≤ 25 ms at 1,000/s", (x[0] if x else 0, 25), fontsize=7)
        ax.set_yscale("log")
        ax.set_xlabel("offered load (intents/s)")
        ax.set_title(_label(scenario).removeprefix("gate, "), fontsize=9)
        if n == 0:
            ax.set_ylabel("end-to-end latency, ms (log)")
            ax.legend(fontsize=7)
    right = fig.add_subplot(grid[1, :])
    labels: list[str] = []
    values: list[float] = []
    colors: list[str] = []
    for scenario in result.get("gate", []):
        top = capacity(scenario["phases"])
        if top:
            labels.append(_label(scenario).replace(", ", "\n"))
            values.append(top["throughput"])
            colors.append("tab:blue")
    for base in result.get("baselines", []):
        top = _phase(base["phases"], "max")
        if top:
            labels.append(f"raw loop\n{base['mode']}")
            values.append(top["throughput"])
    bars = right.bar(labels, values, color=colors + ["gray"] * (len(values) - len(colors)))
    for bar, value in zip(bars, values, strict=False):
        right.annotate(
            f"{value:,.0f}/s",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    right.set_yscale("log")
    right.set_ylabel("decided intents/s, best saturated phase (log)")
    right.set_title("Capacity vs workers (and the raw consume→produce loop at maximum rate)")
    right.axhline(GOALS["capacity_one_worker"], color="black", linewidth=0.8, linestyle="--")
    right.annotate("goal: 2,500/s with 1 worker", (-0.4, GOALS["capacity_one_worker"]), fontsize=7)
    fig.suptitle(
        f"trustplane {result['mode']} benchmark {result['run_id']} "
        f"({result['machine']['cpus']} CPUs, broker + workers + load generator on one machine)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_results(result: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """Write ``<mode>.json``, ``<mode>.md`` and (with matplotlib) ``<mode>.png``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = result["mode"]
    paths = {"json": output_dir / f"{stem}.json", "markdown": output_dir / f"{stem}.md"}
    result = {**result, "goals": goals(result)}
    paths["json"].write_text(json.dumps(result, indent=1, default=str) + "\n")
    paths["markdown"].write_text(markdown(result) + "\n")
    png = output_dir / f"{stem}.png"
    if plot(result, png):
        paths["png"] = png
    return paths
