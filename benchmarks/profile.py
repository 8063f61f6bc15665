"""Where our compiled step spends its time: an XLA:CPU op profile of one benchmark workload.

    uv run python -m benchmarks.profile resnet50/train          # the 15 slowest ops
    uv run python -m benchmarks.profile seed_cnn/train --top 30

Runs the workload as benchmarks.run_flaxvision does (the real Trainer or logits step), traces
one repeat after a warm-up with jax.profiler, and adds up each XLA op's time over the CPU
threads. Each op is named by what it computes, read from XLA's optimized HLO (dumped for the
run): for convolutions and dots their shapes, whether they belong to the forward or the
backward pass, their FLOPs and the rate reached, which is what shows a slow formulation.
Like the benchmark, it means something only on an otherwise idle machine.
"""

import argparse
import collections
import dataclasses
import math
import os
import re
import tempfile
from pathlib import Path

from benchmarks.workloads import BATCH_SIZE, WORKLOADS

STEP_MODULES = ("jit__train_step", "jit_logits_step")  # the compiled steps' XLA module names
SHAPE = r"[a-z]+\d*\[[\d,]*\]"
ONEDNN = "flaxvision_onednn_conv_"  # the custom calls of oneDNN's convolutions, then the pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=list(WORKLOADS))
    parser.add_argument("--top", type=int, default=15, help="how many ops to list, the slowest first")
    parser.add_argument("--batches", type=int, default=2, help="batches in the traced repeat")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flaxvision-profile-") as work:
        dump = Path(work) / "hlo"
        # XLA reads its flags when JAX starts its backend: set them before the first import of jax.
        os.environ["XLA_FLAGS"] = " ".join(
            [
                os.environ.get("XLA_FLAGS", ""),
                f"--xla_dump_to={dump}",
                "--xla_dump_hlo_as_text",
                f"--xla_dump_hlo_module_re={'|'.join(STEP_MODULES)}",
            ]
        )
        times, wall_s = trace(args.workload, args.batches, Path(work) / "trace")
        module, ops = read_hlo(dump)
    print(report(args.workload, args.batches, times[module], wall_s, ops, args.top))


def trace(key: str, batches: int, log_dir: Path) -> tuple[dict, float]:
    """Seconds per XLA op of each step module over one traced repeat, and the repeat's wall time."""
    import jax

    from benchmarks.run_flaxvision import workload_repeat
    from benchmarks.workloads import timed

    repeat, _ = workload_repeat(WORKLOADS[key], batches)
    repeat()  # compiles
    with jax.profiler.trace(str(log_dir)):
        _, wall_s = timed(repeat)
    profile = jax.profiler.ProfileData.from_file(str(next(log_dir.rglob("*.xplane.pb"))))
    times = collections.defaultdict(lambda: collections.Counter())
    for plane in profile.planes:
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                if stats.get("hlo_module") in STEP_MODULES and not event.name.startswith("ThunkExecutor"):
                    times[stats["hlo_module"]][stats.get("hlo_op", event.name)] += event.duration_ns / 1e9
    if not times:
        raise SystemExit(f"error: the trace holds no op of {', '.join(STEP_MODULES)}: has the step been renamed?")
    return times, wall_s


@dataclasses.dataclass(frozen=True)
class Op:
    """One instruction of the optimized HLO and what it computes."""

    name: str
    what: str  # its convolutions and dots with their shapes, else its opcode and what it fuses
    flops: float  # of those products; 0 for the other ops
    part: str  # 'forward', 'backward' (the gradient) or 'unknown' (XLA's rewrites dropped the metadata)


def read_hlo(dump: Path) -> tuple[str, dict[str, Op]]:
    """The step's module name and its top-level instructions, from the dumped optimized HLO."""
    path = next((p for p in dump.glob("*after_optimizations.txt") if any(m in p.name for m in STEP_MODULES)), None)
    if path is None:
        raise SystemExit(f"error: XLA dumped no optimized HLO of {', '.join(STEP_MODULES)} into {dump}")
    module = next(m for m in STEP_MODULES if m in path.name)
    lines = path.read_text().splitlines()
    definition = re.compile(rf"^\s*(?:ROOT )?%?([\w.\-]+) = ({SHAPE}|\(.*?\))\S* ([\w\-]+)\((.*)$")
    shapes, calls, bodies, current = {}, {}, collections.defaultdict(list), None
    for line in lines:
        if header := re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line):
            current = header.group(1)
            continue
        if match := definition.match(line):
            name, shape, opcode, rest = match.groups()
            shapes[name] = shape
            bodies[current].append((name, shape, opcode, rest))
            if called := re.search(r"calls=%?([\w.\-]+)", rest):
                calls[name] = called.group(1)
    ops = {}
    for body in bodies.values():
        for name, shape, opcode, rest in body:
            fused = bodies.get(calls.get(name), [])
            inner = (
                [(name, shape, opcode, rest)]
                if opcode in ("convolution", "dot") or ONEDNN in rest
                else [(n, s, o, r) for n, s, o, r in fused if o in ("convolution", "dot")]
            )
            what, flops = _describe(inner, shapes) if inner else (_fuses(opcode, fused), 0.0)
            ops[name] = Op(name, what, flops, _part([rest, *(r for *_, r in fused)]))
    return module, ops


def _part(texts: list[str]) -> str:
    """Which pass an op belongs to: JAX names the gradient's ops transpose(jvp(...)) in their metadata."""
    names = [name for text in texts for name in re.findall(r'op_name="([^"]*)"', text)]
    if any("transpose(" in name for name in names):
        return "backward"
    return "forward" if names else "unknown"


def _fuses(opcode: str, fused: list) -> str:
    """'fusion of transpose, multiply, add': an op and the most frequent operations it fuses."""
    counts = collections.Counter(o for _, _, o, _ in fused if o not in ("parameter", "constant", "bitcast"))
    return f"{opcode} of {', '.join(o for o, _ in counts.most_common(4))}" if counts else opcode


def _describe(products, shapes) -> tuple[str, float]:
    """'conv 3x3 f32[32,2,2,512] * f32[3,3,512,512] -> f32[32,2,2,512]' and the FLOPs of each product."""
    parts, flops = [], 0.0
    for _, shape, opcode, rest in products:
        operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])[:2]
        lhs, rhs = (shapes.get(o, "?") for o in operands)
        if pass_name := re.search(rf'{ONEDNN}(\w+)"', rest):  # flaxvision.ops.onednn's Forward, InputGrad, KernelGrad
            kernel, gradient = {"Forward": (rhs, shape), "InputGrad": (rhs, lhs), "KernelGrad": (shape, rhs)}[
                pass_name[1]
            ]
            flops += 2 * math.prod(_dims(gradient)) * math.prod(_dims(kernel)[:3])
            parts.append(f"oneDNN conv {pass_name[1]} {lhs} * {rhs} -> {shape}")
        elif opcode == "convolution":
            window = re.search(r"size=([\dx]+)", rest)
            labels = re.search(r"dim_labels=\w+_(\w+)->", rest)
            rhs_dims = _dims(rhs)
            # each output element is a dot product over the kernel's elements per output feature
            per_output = math.prod(rhs_dims) / rhs_dims[labels.group(1).index("o")] if labels and rhs_dims else 0
            flops += 2 * math.prod(_dims(shape)) * per_output
            parts.append(f"conv {window.group(1) if window else ''} {lhs} * {rhs} -> {shape}")
        else:
            contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
            lhs_dims = _dims(lhs)
            size = math.prod(lhs_dims[int(i)] for i in contracting.group(1).split(",") if i) if contracting else 0
            flops += 2 * math.prod(_dims(shape)) * size
            parts.append(f"dot {lhs} * {rhs} -> {shape}")
    return "; ".join(parts), flops


def _dims(shape: str) -> list[int]:
    found = re.search(r"\[([\d,]*)\]", shape)
    return [int(d) for d in found.group(1).split(",") if d] if found else []


def report(key: str, batches: int, times: collections.Counter, wall_s: float, ops: dict[str, Op], top: int) -> str:
    steps = batches
    total = sum(times.values())
    lines = [
        f"{key}: {steps} steps of batch {BATCH_SIZE} traced, {wall_s / steps * 1e3:.1f} ms per step "
        f"(wall); XLA ops ran {total / steps * 1e3:.1f} ms per step (summed over threads).",
        "",
        "By kind (ms per step, share of op time):",
    ]
    kinds = collections.Counter()
    for name, seconds in times.items():
        kinds[_kind(ops.get(name))] += seconds
    lines += [
        f"  {kind:<32} {seconds / steps * 1e3:8.1f} ms  {seconds / total:6.1%}" for kind, seconds in kinds.most_common()
    ]
    lines += [
        "",
        f"The {top} slowest ops (ms per step, share, GFLOP/s where XLA computes a product):",
        f"  {'op':<32} {'ms':>8} {'share':>6} {'GFLOP/s':>8}  what",
    ]
    for name, seconds in times.most_common(top):
        op = ops.get(name)
        rate = f"{op.flops * steps / seconds / 1e9:8.1f}" if op and op.flops else f"{'':>8}"
        what = f"{op.part}: {op.what}" if op else "?"
        lines.append(f"  {name:<32} {seconds / steps * 1e3:8.2f} {seconds / total:6.1%} {rate}  {what}")
    return "\n".join(lines)


def _kind(op: Op | None) -> str:
    if op is None:
        return "other"
    if op.flops:
        product = "convolution" if op.what.startswith(("conv", "oneDNN")) else "matmul"
        return f"{product} ({op.part})"
    if "copy" in op.name or "transpose" in op.name:
        return "copies and transposes"
    return "elementwise and reductions"


if __name__ == "__main__":
    main()
