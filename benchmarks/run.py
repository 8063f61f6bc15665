"""Benchmark flaxvision against TF-Keras and PyTorch on this machine, side by side.

    uv run python -m benchmarks.run            # everything (~15 min on 2 cores, after the peers' install)
    uv run python -m benchmarks.run --quick    # a smoke run: fewer, shorter repeats
    uv run python -m benchmarks.run --frameworks flaxvision --workloads resnet50/train --no-end-to-end

Each framework runs in its own process, one after the other (see benchmarks/peers.py; the peers
install on first use). Per workload (benchmarks/workloads.py): train or inference img/s at batch
32, the median of timed repeats after a warm-up, the first call's time (compilation) apart; our
ratio to the fastest peer; the issue's targets as PASS/MISS. End to end (benchmarks.workloads
RECIPES): one training epoch of seed 000's and of seed 002's recipe on cats_vs_dogs, Keras'
ImageDataGenerator pipeline against ours.
The report (Markdown) is printed and written with the raw JSON results to benchmarks/.work/.
Timings are only meaningful on an otherwise idle machine: the load average is recorded.
"""

import argparse
import dataclasses
import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

from benchmarks import peers
from benchmarks.workloads import RECIPES, TARGETS, WORKLOADS, Protocol, Recipe
from flaxvision.files import write_bytes, write_json

WORK_DIR = peers.ROOT / "benchmarks" / ".work"
FRAMEWORKS = (peers.OURS, *peers.PEERS)
RUN_TIMEOUT_S = 1800  # one framework's whole run
BEGIN, END = "<!-- benchmarks.run: begin -->", "<!-- benchmarks.run: end -->"  # --update replaces what is between
OUR_SETTINGS = ("XLA_FLAGS", "FLAXVISION_NUMERICS", "FLAXVISION_CONVOLUTIONS")
QUICK = Protocol(warmup=1, repeats=2, batches_scale=0.34, end_to_end_epochs=2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--frameworks",
        default=",".join(f.name for f in FRAMEWORKS),
        help="comma-separated, of: " + ", ".join(f.name for f in FRAMEWORKS),
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, of: " + ", ".join(WORKLOADS))
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the cats_vs_dogs epochs")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 short repeats, 2 epochs")
    parser.add_argument("--repeats", type=int, help=f"timed repeats per workload (default {Protocol.repeats})")
    parser.add_argument(
        "--output",
        type=Path,
        default=WORK_DIR / "latest",
        help="writes OUTPUT.md (the report) and OUTPUT.json (every measurement)",
    )
    parser.add_argument(
        "--update",
        type=Path,
        metavar="MARKDOWN",
        help=f"also put the report between the lines {BEGIN!r} and {END!r} of this file (docs/benchmarks.md)",
    )
    args = parser.parse_args()
    if args.update:
        _check_markers(args.update)
    frameworks = [_choice(name, {f.name: f for f in FRAMEWORKS}, "--frameworks") for name in _names(args.frameworks)]
    workloads = [_choice(key, WORKLOADS, "--workloads").key for key in _names(args.workloads)]
    protocol = QUICK if args.quick else Protocol()
    if args.repeats:
        protocol = dataclasses.replace(protocol, repeats=args.repeats)

    machine = machine_info()
    if machine["load_average_before"][0] > 1.5:
        print(
            f"warning: load average {machine['load_average_before'][0]:.2f}: other work is running, "
            "timings will be low and noisy",
            file=sys.stderr,
        )
    raw = None if args.no_end_to_end else download_cats_vs_dogs(machine)

    results = {}
    for framework in frameworks:
        arguments = [
            "--workloads",
            ",".join(workloads),
            "--warmup",
            str(protocol.warmup),
            "--repeats",
            str(protocol.repeats),
            "--batches-scale",
            str(protocol.batches_scale),
            "--epochs",
            str(protocol.end_to_end_epochs),
        ]
        if raw and framework is not peers.PYTORCH:  # the end-to-end comparison is Keras' pipeline against ours
            arguments += ["--end-to-end", str(raw)]
        print(f"running {framework.name} ...", file=sys.stderr, flush=True)
        try:
            results[framework.name] = peers.run(framework, arguments, RUN_TIMEOUT_S)
        except peers.Missing as missing:
            results[framework.name] = {"missing": str(missing)}
    machine["load_average_after"] = os.getloadavg()

    # These change our figures (the host split into several CPU devices; XLA's numerics;
    # oneDNN's convolutions):
    # part of the command.
    settings = [f"{name}={shlex.quote(os.environ[name])}" for name in OUR_SETTINGS if os.environ.get(name)]
    command = " ".join([*settings, "uv run python -m benchmarks.run", *sys.argv[1:]])
    report = render(machine, command, protocol, workloads, [f.name for f in frameworks], results)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(args.output.with_suffix(".md"), report.encode())
    write_json(
        args.output.with_suffix(".json"),
        {"machine": machine, "command": command, "protocol": dataclasses.asdict(protocol), "results": results},
    )
    print(f"written: {args.output.with_suffix('.md')}, {args.output.with_suffix('.json')}", file=sys.stderr)
    if args.update:
        before, after = _check_markers(args.update)
        write_bytes(args.update, f"{before}{BEGIN}\n{report}{END}{after}".encode())
        print(f"updated: {args.update}", file=sys.stderr)


def _check_markers(path: Path) -> tuple[str, str]:
    """The text of ``path`` before its BEGIN line and from the end of its END line on."""
    text = path.read_text() if path.is_file() else ""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"error: --update {path}: it needs one line {BEGIN!r} and, after it, one line {END!r}")
    return text[: text.index(BEGIN)], text[text.index(END) + len(END) :]


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def _choice(name: str, options: dict, option: str):
    if name not in options:
        raise SystemExit(f"error: {option}: unknown '{name}'; valid: {', '.join(options)}")
    return options[name]


def machine_info() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    meminfo = Path("/proc/meminfo").read_text().split() if Path("/proc/meminfo").exists() else []
    memory_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20 if "MemTotal:" in meminfo else None
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib and round(memory_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
    }


def download_cats_vs_dogs(machine: dict) -> Path:
    """cats_vs_dogs as the pipeline's download stage leaves it (once), in benchmarks/.work/raw."""
    from flaxvision.data import download_dataset
    from flaxvision.errors import UserError

    raw = WORK_DIR / "raw"
    if not (raw / "PROVENANCE.json").is_file():
        print("downloading cats_vs_dogs (the pipeline's download stage) ...", file=sys.stderr, flush=True)
        try:
            download_dataset("cats_vs_dogs", raw)
        except UserError as error:
            raise SystemExit(f"error: {error} (or run with --no-end-to-end)") from None
    return raw


# --- the report -----------------------------------------------------------------------------


def render(
    machine: dict, command: str, protocol: Protocol, workloads: list[str], frameworks: list[str], results: dict
) -> str:
    peer_names = [name for name in frameworks if name != peers.OURS.name]
    lines = [
        f"- Measured {machine['date']} on {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB, {machine['platform']}, Python {machine['python']}.",
        f"- Load average (1, 5, 15 min) before: {_load(machine['load_average_before'])}; "
        f"after: {_load(machine['load_average_after'])}.",
        "- Versions: " + "; ".join(f"{name} {_versions(results[name])}" for name in frameworks) + ".",
        f"- Command: `{command}`; batch 32, {protocol.warmup} warm-up and {protocol.repeats} timed repeats per "
        "workload, img/s is their median.",
        "",
        "| model | input | mode | params | "
        + " | ".join(f"{name} img/s" for name in frameworks)
        + " | ours / fastest peer | ours GFLOP/s |",
        "|---" * (5 + len(frameworks)) + "|---|",
    ]
    for key in workloads:
        workload = WORKLOADS[key]
        cells = {name: _measurement(results[name], key) for name in frameworks}
        ours, best_peer = _img_per_s(results, peers.OURS.name, key), _fastest_peer(results, peer_names, key)
        ratio = f"{ours / best_peer[1]:.2f}× ({best_peer[0]})" if ours and best_peer else "n/a"
        lines.append(
            f"| {workload.title} | {'×'.join(map(str, workload.input_shape))} | {workload.mode} | "
            f"{_params(results, frameworks, key)} | "
            + " | ".join(cells.values())
            + f" | {ratio} | {_gflops(results, key)} |"
        )
    lines += [
        "",
        "First call (compilation or tracing included) and model build, in seconds; compile = the first "
        "call minus a steady repeat (PyTorch's first call follows its memory-format probe: it is warm):",
        "",
        "| model | mode | " + " | ".join(frameworks) + " |",
        "|---|---|" + "---|" * len(frameworks),
    ]
    for key in workloads:
        cells = [_first_call(results[name], key) for name in frameworks]
        lines.append(f"| {WORKLOADS[key].title} | {WORKLOADS[key].mode} | " + " | ".join(cells) + " |")
    if (torch := results.get(peers.PYTORCH.name, {}).get("workloads")) is not None:
        formats = ", ".join(f"{key} {r['memory_format']}" for key, r in torch.items() if "memory_format" in r)
        lines += ["", f"PyTorch memory format chosen by its probe: {formats}."]

    sections = [_end_to_end_section(results, recipe) for recipe in RECIPES.values()]
    sections = [section for section in sections if section]
    lines += ["", "Targets (issue 11): ours / fastest peer, batch 32, this CPU; end to end: Keras epoch / ours.", ""]
    for key, target in TARGETS.items():
        if key in workloads:
            ours, best_peer = _img_per_s(results, peers.OURS.name, key), _fastest_peer(results, peer_names, key)
            ratio = ours / best_peer[1] if ours and best_peer else None
            lines.append(_target_line(f"{key} ≥ {target}× the fastest peer", ratio, target))
    for section in sections:
        lines.append(_target_line(section["target"], section["ratio"], section["recipe"].target))
    for section in sections:
        lines += ["", *section["lines"]]
    return "\n".join(lines) + "\n"


def _end_to_end_section(results: dict, recipe: Recipe) -> dict | None:
    keras = results.get(peers.TF_KERAS.name, {}).get("end_to_end", {}).get(recipe.name)
    ours = results.get(peers.OURS.name, {}).get("end_to_end", {}).get(recipe.name)
    if keras is None and ours is None:
        return None
    augmentation = ", ".join(f"{name.removesuffix('_range')} {value}" for name, value in recipe.augmentation.items())
    lines = [
        f"End to end, {recipe.name}: one training epoch on cats_vs_dogs' train folder (2000 JPEGs, 2 classes), "
        f"{recipe.title}, ImageDataGenerator's {augmentation}; Adam, batch 32, no validation:",
        "",
        "| | Keras: ImageDataGenerator + flow_from_directory + model.fit | flaxvision: prepared uint8 arrays "
        "on device + Trainer.train_epoch |",
        "|---|---|---|",
    ]
    rows = [
        (
            "one-off preprocess (decode, resize, split)",
            lambda r: "none (decodes every epoch)"
            if r is keras
            else f"{r['preprocess_s']:.1f} s (+ {r['device_put_s']:.2f} s to the device)",
        ),
        (
            "the data alone, one epoch's batches (decode, augment)",
            lambda r: f"{r['data_s']:.2f} s" if r is keras else "inside the compiled step",
        ),
        ("first epoch (tracing / compilation)", lambda r: f"{r['first_epoch_s']:.1f} s"),
        ("epoch after that (median)", lambda r: f"**{r['epoch_s']:.2f} s**"),
        ("images per epoch", lambda r: f"{r['images_per_epoch']} ({r['images_per_epoch'] / r['epoch_s']:.0f} img/s)"),
    ]
    for title, cell in rows:
        lines.append(f"| {title} | " + " | ".join(_cell(r, cell) for r in (keras, ours)) + " |")
    ratio = keras["epoch_s"] / ours["epoch_s"] if _ok(keras) and _ok(ours) else None
    lines.append(f"| ratio (Keras epoch / ours) | | {f'**{ratio:.1f}×**' if ratio else 'n/a'} |")
    target = f"end-to-end epoch of {recipe.name} ≥ {recipe.target}× faster than Keras"
    return {"recipe": recipe, "ratio": ratio, "target": target, "lines": lines}


def _cell(result, cell) -> str:
    if result is None:
        return "missing"
    if "error" in result:
        return f"failed ({result['error']})"
    return cell(result)


def _ok(result) -> bool:
    return result is not None and "error" not in result


def _target_line(what: str, ratio: float | None, target: float) -> str:
    verdict = "n/a" if ratio is None else ("PASS" if ratio >= target else "MISS")
    return f"- {verdict}: {what}: " + ("no measurement" if ratio is None else f"{ratio:.2f}×")


def _measurement(result: dict, key: str) -> str:
    if "missing" in result:
        return f"missing ({result['missing']})"
    measured = result["workloads"].get(key)
    if measured is None:
        return "—"
    if "error" in measured:
        return f"failed ({measured['error']})"
    return f"{measured['img_per_s']:.1f}"


def _img_per_s(results: dict, name: str, key: str) -> float | None:
    return results.get(name, {}).get("workloads", {}).get(key, {}).get("img_per_s")


def _fastest_peer(results: dict, names: list[str], key: str) -> tuple[str, float] | None:
    measured = [(name, value) for name in names if (value := _img_per_s(results, name, key))]
    return max(measured, key=lambda item: item[1]) if measured else None


def _params(results: dict, frameworks: list[str], key: str) -> str:
    counts = {
        results[name]["workloads"][key]["params"]
        for name in frameworks
        if "params" in results[name].get("workloads", {}).get(key, {})
    }
    return " / ".join(f"{count:,}" for count in sorted(counts)) or "—"


def _gflops(results: dict, key: str) -> str:
    """Our achieved rate: forward FLOPs per image (XLA's count) × img/s, × 3 for training."""
    measured = results.get(peers.OURS.name, {}).get("workloads", {}).get(key, {})
    if "forward_gflop_per_image" not in measured:
        return "—"
    passes = 3 if WORKLOADS[key].mode == "train" else 1  # forward, and backward's two products
    return f"{measured['forward_gflop_per_image'] * passes * measured['img_per_s']:.0f}"


def _first_call(result: dict, key: str) -> str:
    measured = result.get("workloads", {}).get(key, {})
    if "first_call_s" not in measured:
        return "—"
    return f"{measured['first_call_s']:.1f} (compile {measured['compile_s']:.1f}, build {measured['build_s']:.1f})"


def _versions(result: dict) -> str:
    if "missing" in result:
        return f"missing ({result['missing']})"
    return ", ".join(f"{k} {v}" for k, v in result["versions"].items() if k != "devices")


def _load(load: tuple) -> str:
    return ", ".join(f"{value:.2f}" for value in load)


if __name__ == "__main__":
    main()
