"""Picks the real-time presets from the measured tables, by issue 18's rule.

    python benchmarks/realtime_choice.py        # writes benchmarks/results/realtime_choice.json and .md

- `realtime`: the fastest option whose mIoU is within `MARGIN` (2) of the best option's; options
  within `TIE` (15 %) of the fastest one's time count as tied with it, and the most accurate of
  them is picked (the same model's time moved 12 % between two idle runs).
- `realtime-fast`: the most accurate option at `TARGET_FPS` (30) or more that is also at least
  `FAST_SPEEDUP` (2) times as fast as `realtime`: the preset with headroom for CPUs slower than
  the one measured (on a faster CPU `realtime` itself passes 30 FPS, and a rule on 30 FPS alone
  would make both presets one model).

Accuracy: final.keras mIoU on the synthetic validation scenes, the mean over every seed trained
(`benchmarks/realtime_options.py`: the results/ files in `ACCURACY_FILES`; one row per option
and seed, duplicates counted once). Speed: two-scale,
fused at the decoder, 512x1024, TFLite float32, class map at stride 1, from
results/realtime_speed_all.json (`benchmarks/realtime_speed.py`, idle machine: every option in one
run, so their times compare). The best mIoU is over every trained option; only options timed and
trained with `MIN_SEEDS` (3) seeds can be picked; options timed but not trained are listed.
tests/test_realtime_choice.py checks that
the presets in synergyseg/training/config.py are this choice of the committed tables.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
ACCURACY_FILES = ("realtime_options.json", "realtime_options_seeds.json", "small_minimal_cut16.json",
                  "deeplab_small_minimal_cut16.json", "realtime_options_rest.json",
                  "realtime_options_large_seeds.json", "deeplab_large_cut16_seeds.json")
SPEED_FILE = "realtime_speed_all.json"
SPEED_ENTRY = {"size": "512x1024", "variant": "two-scale (decoder)", "path": "tflite-fp32",
               "class_map_stride": 1}
PRESET_SEED = 0  # RunConfig's default seed
MARGIN = 2.0  # mIoU points
TARGET_FPS = 30.0
# `realtime-fast` runs at least this many times `realtime`'s frame rate. On the AVX2 machine of
# 2026-11-30 `realtime` ran 11.4 FPS and the 30 FPS option 37.7; on the AVX-512 machine of
# 2026-12-01 they ran 42.6 and 97.3 (results/realtime_speed*.json).
FAST_SPEEDUP = 2.0
# Seeds an option needs before it can be picked: one seed's mIoU moved 3.6 points between seeds of
# one option (realtime-lraspp-small-minimal: 66.7 / 66.0 / 63.1), more than MARGIN.
MIN_SEEDS = 3
# Times within this fraction of each other are a tie: realtime-lraspp-large-cut16 took 71.5 ms in
# one idle run and 80.0 ms in the next (results/realtime_speed.json, realtime_speed_run2.json).
TIE = 0.15


def accuracy(paths):
    """`{option: [mIoU % per seed]}` from realtime_options.py result files (missing files skipped)."""
    seen = {}
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            for row in json.load(f)["rows"]:
                if row["option"].startswith("realtime-") and row.get("fuse_at") == "decoder":
                    # Rows written before --seeds existed are the preset's own seed.
                    seen[(row["option"], row.get("seed", PRESET_SEED))] = 100 * row["final_mean_iou"]
    out = {}
    for (option, _), miou in sorted(seen.items()):
        out.setdefault(option, []).append(miou)
    return out


def speed(path):
    """`{option: ms}` of the `SPEED_ENTRY` rows of a realtime_speed.py result file."""
    with open(path) as f:
        entries = json.load(f)["entries"]
    return {e["model"]: e["ms"] for e in entries
            if all(e.get(k) == v for k, v in SPEED_ENTRY.items()) and e["model"].startswith("realtime-")}


def fast_enough(ms):
    """True at `TARGET_FPS` or more, judged on the measured time (not on a rounded FPS)."""
    return 1000 / ms >= TARGET_FPS


def choose(mious, ms):
    """The rule on `{option: [mIoU per seed]}` and `{option: ms}`: a dict with every trained option
    (timed ones sorted by time, then the untimed, whose "ms" is None), the best mIoU over all of
    them and the two picks among the timed ones with `MIN_SEEDS` seeds (None where none
    qualifies: an untimed option more accurate than every timed one leaves `realtime` to be timed
    first)."""
    rows = []
    for option in sorted(set(mious) | set(ms), key=lambda o: (o not in ms, ms.get(o, 0.0), o)):
        values = mious.get(option, [])  # timed but not trained yet: listed, never picked
        rows.append({"option": option, "seeds": len(values),
                     "miou": round(sum(values) / len(values), 2) if values else None,
                     "miou_per_seed": [round(v, 2) for v in values], "ms": ms.get(option),
                     "fps": round(1000 / ms[option], 1) if option in ms else None})
    if not mious:
        return {"rows": rows, "best_miou": None, "realtime": None, "realtime_fast": None}
    best = max(r["miou"] for r in rows if r["miou"] is not None)
    timed = [r for r in rows if r["ms"] is not None and r["seeds"] >= MIN_SEEDS]
    close = [r for r in timed if r["miou"] >= best - MARGIN]
    fast = [r for r in timed if fast_enough(r["ms"])]
    realtime = None
    if close:
        fastest = min(r["ms"] for r in close)
        tied = [r for r in close if r["ms"] <= fastest * (1 + TIE)]
        realtime = max(tied, key=lambda r: (r["miou"], -r["ms"]))["option"]
        fast = [r for r in fast if r["ms"] * FAST_SPEEDUP <= ms[realtime]]
    return {"rows": rows, "best_miou": best, "realtime": realtime,
            "realtime_fast": max(fast, key=lambda r: (r["miou"], -r["ms"]))["option"] if fast else None}


def markdown(choice):
    lines = ["| option | seeds | mIoU (mean) | mIoU per seed | ms two-scale 512x1024 | FPS | "
             f"within {MARGIN:g} of best | >= {TARGET_FPS:g} FPS |", "|---|---:|---:|---|---:|---:|---|---|"]
    for r in choice["rows"]:
        timed = r["ms"] is not None
        ms, fps = (f"{r['ms']:.1f}", f"{r['fps']:.1f}") if timed else ("not timed", "-")
        fast = ("yes" if fast_enough(r["ms"]) else "no") if timed else "-"
        if r["miou"] is None:
            lines.append(f"| {r['option']} | 0 | not trained | - | {ms} | {fps} | - | {fast} |")
            continue
        close = "yes" if r["miou"] >= choice["best_miou"] - MARGIN else "no"
        per_seed = " / ".join(f"{v:.1f}" for v in r["miou_per_seed"])
        lines.append(f"| {r['option']} | {r['seeds']} | {r['miou']:.1f} | {per_seed} | {ms} | {fps} | {close} | {fast} |")
    lines += ["", f"Options with {MIN_SEEDS} seeds and a time can be picked. "
              f"`realtime` = {choice['realtime']} (the fastest within {MARGIN:g} mIoU of the best, "
              f"{choice['best_miou']:.1f}; times within {TIE:.0%} of the fastest are a tie, won by "
              f"the more accurate); `realtime-fast` = {choice['realtime_fast']} "
              f"(the most accurate at >= {TARGET_FPS:g} FPS and at least {FAST_SPEEDUP:g}x `realtime`'s FPS)."]
    return "\n".join(lines) + "\n"


def committed_choice(results=RESULTS):
    """The rule applied to the committed result files."""
    return choose(accuracy([os.path.join(results, name) for name in ACCURACY_FILES]),
                  speed(os.path.join(results, SPEED_FILE)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=RESULTS, help="folder of the result files")
    parser.add_argument("--out", default=os.path.join(RESULTS, "realtime_choice"),
                        help="path without extension of the .json and .md written")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(HERE))
    from synergyseg.atomic import write_json, write_text

    choice = committed_choice(args.results)
    write_json(args.out + ".json", choice)
    write_text(args.out + ".md", markdown(choice))
    print(markdown(choice), end="")
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
