"""The stages bench's targets (measured ratios against their goals) and its text table."""
from __future__ import annotations

from .common import COMPARED


def targets(r: dict) -> list[dict]:
    """The speed targets as measured ratios: (name, value, goal, met)."""
    out = []

    def add(name, value, goal, met):
        out.append({"target": name, "value": value, "goal": goal, "met": bool(met) if value is not None else None})

    t = r["training"]
    for precision in COMPARED:
        v = t[f"pruned/dense {precision}"]
        add(f"pruned step / dense step ({precision})", v, "<= 1.10", v <= 1.10)
    if "seed_vs_ours" in r:
        v = r["seed_vs_ours"]["speed-up"]
        add("ours vs seed-style training speed-up", v, ">= 3", v >= 3)
    p = r["precision_auto"]
    # the faster of the two, as timed above (within 5 %: a tie is no reason to change precision)
    faster = "mixed_bfloat16" if t["bf16 speed-up dense"] > 1.05 else "float32"
    expect = "mixed_float16" if p["gpus"] else faster
    add(f"precision auto picks the faster (bf16 {t['bf16 speed-up dense']:.2f}x float32)", p["picked"], expect,
        p["picked"] == expect or (not p["gpus"] and 0.95 <= t["bf16 speed-up dense"] <= 1.05))
    v = r["data"]["headroom_x"]
    add("data pipeline / training consumption", v, ">= 5", v >= 5)
    v = r["fixed_cost"]["total_s"]
    add("trial fixed cost, process start to first step (s)", v, "<= 15", v <= 15)
    v = r["fixed_cost"]["total_cpu_s"]  # single-threaded stages: = wall time on an idle machine
    add("  the same in CPU s (= wall on an idle machine)", v, "<= 15", v <= 15)
    return out


def format_table(r: dict) -> str:
    s = r["sizes"]
    m = r["machine"]
    lines = [f"python -m benchmarks stages{' --quick (sizes too small to mean anything)' if r['quick'] else ''}: "
             f"patch {s['patch_size']}, batch {s['batch_size']}, {m['cores']} cores, {m['threads']} threads, "
             f"TF {m['tensorflow']}, load {m['load_avg_1m']}",
             ""]

    def section(title):
        lines.extend(["", title])

    def row(label, value, note=""):
        lines.append(f"  {label:<46} {value:>12}  {note}".rstrip())

    f = r["fixed_cost"]
    section(f"Fixed cost of a trial (process start -> first training step), precision {f['precision']}")
    for name, v in f["stages_s"].items():
        row(name, f"{v:.2f} s", f"cpu {f['stages_cpu_s'][name]:.2f} s")
    row("total", f"{f['total_s']:.2f} s", f"cpu {f['total_cpu_s']:.2f} s; {f['total_without_nni_s']:.2f} s outside NNI")
    row("later fit() call, 1 step (reference)", f"{f['later_fit_call_1_step_s']:.2f} s")

    d = r["data"]
    section("Data pipeline alone vs training")
    row("pipeline, first epoch (decode from disk)", f"{d['first_epoch_img_s']:.0f} img/s")
    row("pipeline, later epochs", f"{d['later_epoch_img_s']:.0f} img/s")
    row("training consumes (pruned, precision auto)", f"{d['training_consumes_img_s']:.1f} img/s")
    row("headroom", f"{d['headroom_x']:.1f} x")

    t = r["training"]
    section("Training (in-memory batches, graph mode)")
    for precision in COMPARED:
        for kind in ("dense", "pruned"):
            v = t[f"{kind} {precision}"]
            row(f"{kind} {precision}", f"{v['img_s']:.1f} img/s", f"{v['step_ms']:.1f} ms/step")
        row(f"pruned / dense step time, {precision}", f"{t[f'pruned/dense {precision}']:.3f} x")
    row("bf16 speed-up (dense)", f"{t['bf16 speed-up dense']:.2f} x")

    fl = r["flops"]
    section(f"Arithmetic: {fl['forward_gflop_per_image']:.3f} GFLOP forward/image, "
            f"training step = 3 x forward x batch = {fl['train_step_gflop']:.2f} GFLOP")
    for dtype, v in fl["matmul_peak_gflop_s"].items():
        row(f"peak: {fl['matmul_n']}^2 matmul {dtype}", f"{v:.1f} GFLOP/s")
    for name, v in fl["achieved"].items():
        row(f"achieved: {name}", f"{v['gflop_s']:.1f} GFLOP/s", f"{100 * v['fraction_of_peak']:.0f}% of peak")

    if "seed_vs_ours" in r:
        b = r["seed_vs_ours"]
        section("Seed's way vs ours (pruned training)")
        row("seed: numpy arrays, eager, NNI 2.x masks, fp32", f"{b['seed_img_s']:.1f} img/s",
            f"{b['seed_step_ms']:.0f} ms/step")
        row(f"ours: tf.data, graph, constraint, {b['ours_precision']}", f"{b['ours_img_s']:.1f} img/s",
            f"{b['ours_step_ms']:.0f} ms/step")
        row("speed-up", f"{b['speed-up']:.2f} x")

    i = r["inference"]
    section("Inference (float32, batch as above)")
    for name, v in i["img_s"].items():
        row(name, f"{v:.1f} img/s")
    row("TFLite size / pixel agreement with Keras", f"{i['tflite_kb']} KB", f"{100 * i['tflite_pixel_agreement']:.2f}%")

    mem = r["memory"]
    section("Memory")
    row("peak RSS, trial-like start (to first step)", f"{mem['trial_peak_rss_mb_at_first_step']:.0f} MB")
    row("peak RSS, whole bench", f"{mem['peak_rss_mb']:.0f} MB")

    section("Targets")
    for tg in r["targets"]:
        mark = {True: "met", False: "MISSED", None: "n/a"}[tg["met"]]
        row(tg["target"], str(tg["value"]), f"goal {tg['goal']}: {mark}")
    return "\n".join(lines)
