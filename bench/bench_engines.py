"""Inference engines on this CPU: eager PyTorch (fp32, bf16), ONNX Runtime and OpenVINO (fp32, int8),
against the plain PyTorch loop, for LeNet and ResNet-18/50 on NEU-DET.

    python bench/bench_engines.py [--archs lenet resnet18 resnet50] [--bundle resnet18=runs/r18/best.pt]

Needs the fast extra (pip install -e ".[fast]"). For each architecture (a 1-epoch bundle is trained on
NEU-DET's file-number split unless --bundle gives one):

1. Network only, in this process: throughput on prepared arrays (16 at a time, `--threads` threads),
   and how many predicted classes differ from torch fp32 on `--check` NEU-DET images. Variants: torch
   fp32 and bf16; onnxruntime with all graph optimisations, basic ones, and on 1 thread; OpenVINO f32
   and bf16; int8 (static QDQ quantisation by onnxruntime.quantization, calibrated on 64 training
   images, files 1-200) on both runtimes.
2. Whole process: `microcli predict` (start-up, decoding, rows written) with each engine, against the
   plain loop of bench/_plain.py on the same files (timed in this process, DataLoader start-up
   included, as in bench_predict.py). Best of `--runs` alternated runs: a shared machine's speed
   wanders. The ONNX engines run the bundle with a warm conversion cache (the first-run conversion is
   timed separately) and the exported .onnx file.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _plain  # noqa: E402

from microcli.engines import OnnxRuntimeEngine, OpenVinoEngine  # noqa: E402
from microcli.inference import TorchEngine  # noqa: E402
from microcli.inputs import prepare_array  # noqa: E402
from microcli.modelfile import load_model  # noqa: E402

NEU = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "neu-det"
IMAGES = {"lenet": 5400, "resnet18": 1000, "resnet50": 300}  # whole-process runs (lenet: the list 3 times)
CHECK = {"lenet": 1800, "resnet18": 1800, "resnet50": 360}


def split_manifest(tmp: Path, files: list[str]) -> Path:
    path = tmp / "neu.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        for f in files:
            n = int(re.search(r"_(\d+)\.jpg$", f).group(1))
            w.writerow([f, Path(f).parent.name, "train" if n <= 200 else "val" if n <= 240 else "test"])
    return path


def microcli(*args: str, stdin: str | None = None, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "microcli", *args], input=stdin, text=True, check=True,
                   capture_output=True, env=env)
    return time.perf_counter() - t0


class OrtOptions(OnnxRuntimeEngine):
    """onnxruntime with a chosen graph optimisation level and thread count."""

    def __init__(self, path: str, level: str, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name


class OpenVinoBf16(OpenVinoEngine):
    def __init__(self, path: str, threads: int):
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(path), "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
        self.request = self.compiled.create_infer_request()


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """Static int8 (QDQ, per-channel weights) calibrated on `calibration`; microcli's metadata copied."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": calibration[i:i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self):
            return next(self.batches, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    src, dst = onnx.load(str(fp32)), onnx.load(str(out))
    del dst.metadata_props[:]
    dst.metadata_props.extend(src.metadata_props)
    onnx.save(dst, str(out))


def network_only(name: str, engine, x: np.ndarray, ref: np.ndarray | None) -> np.ndarray:
    engine.probs(x[:16])  # warm-up
    t0 = time.perf_counter()
    out = np.concatenate([engine.probs(x[i:i + 16]) for i in range(0, len(x), 16)])
    rate = len(x) / (time.perf_counter() - t0)
    diff = "reference" if ref is None else f"{int((out.argmax(1) != ref.argmax(1)).sum())} differ, " \
                                           f"max |dp| {np.abs(out - ref).max():.1e}"
    print(f"  {name:34} {rate:8.1f} img/s   classes vs torch fp32: {diff}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(NEU))
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--archs", nargs="+", default=["lenet", "resnet18", "resnet50"])
    ap.add_argument("--bundle", action="append", default=[], help="ARCH=PATH: use this bundle, train none")
    ap.add_argument("--images", action="append", default=[], help="ARCH=N images for the whole-process runs")
    ap.add_argument("--check", action="append", default=[], help="ARCH=N images for the class check")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-network", action="store_true", help="whole-process runs only")
    args = ap.parse_args()
    bundles = dict(b.split("=", 1) for b in args.bundle)
    images = {**IMAGES, **{k: int(v) for k, v in (s.split("=") for s in args.images)}}
    checks = {**CHECK, **{k: int(v) for k, v in (s.split("=") for s in args.check)}}
    files = sorted(str(p) for p in Path(args.data).glob("*/*.jpg"))
    classes = sorted({Path(f).parent.name for f in files})
    print(f"data: {args.data}, {len(files)} images, {args.size} px, cores: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "MICROCLI_CACHE_DIR": str(tmp / "cache")}
        manifest = split_manifest(tmp, files)
        for arch in args.archs:
            bundle = Path(bundles[arch]) if arch in bundles else tmp / arch / "best.pt"
            if arch not in bundles:
                microcli("train", str(manifest), "-o", str(tmp / arch), "--arch", arch, "--epochs", "1",
                         "--img-size", str(args.size), env=env)
            onnx_file, int8_file = tmp / f"{arch}.onnx", tmp / f"{arch}-int8.onnx"
            export_s = microcli("export", str(bundle), "-o", str(onnx_file), env=env)
            mf = load_model(bundle)
            train_files = [f for f in files if int(re.search(r"_(\d+)\.jpg$", f).group(1)) <= 200]
            calib = np.stack([prepare_array(f, mf.input) for f in train_files[:: len(train_files) // 64][:64]])
            quantize_int8(onnx_file, int8_file, calib)
            print(f"\n{arch}: {bundle}  (export to ONNX: {export_s:.1f} s, whole command)")
            few = "\n".join(files[:8]) + "\n"
            cold = {e: microcli("predict", str(bundle), "-", "-o", str(tmp / "few.csv"), "--force", "--engine", e,
                                stdin=few, env={**env, "MICROCLI_CACHE_DIR": str(tmp / f"cold-{arch}-{e}")})
                    for e in ("onnxruntime", "openvino")}
            microcli("predict", str(bundle), "-", "-o", str(tmp / "few.csv"), "--force", stdin=few, env=env)  # warm

            if not args.skip_network:
                check = files[:: max(1, len(files) // checks[arch])][: checks[arch]]
                t0 = time.perf_counter()
                x = np.stack([prepare_array(f, mf.input) for f in check])
                decode_ms = 1000 * (time.perf_counter() - t0) / len(check)
                one = files[0] + "\n"
                start = {e: min(microcli("predict", str(bundle), "-", "-o", str(tmp / "one.csv"), "--force", "--engine",
                                         e, stdin=one, env=env) for _ in range(2)) for e in ("torch", "openvino")}
                print(f" where the time goes: start-up + 1 image {start['torch']:.2f} s with torch, "
                      f"{start['openvino']:.2f} s with openvino (no torch import); decoding + preparing "
                      f"{decode_ms:.2f} ms per image on one core")
                print(f" network only, {len(x)} NEU-DET images in this process, {args.threads} threads:")
                t = args.threads
                ref = network_only("torch fp32 (eager)", TorchEngine(mf, precision="fp32", threads=t), x, None)
                network_only("torch bf16 autocast", TorchEngine(mf, precision="bf16", threads=t), x, ref)
                o = str(onnx_file)
                network_only("onnxruntime, all graph optimisations", OrtOptions(o, "ORT_ENABLE_ALL", t), x, ref)
                network_only("onnxruntime, basic optimisations", OrtOptions(o, "ORT_ENABLE_BASIC", t), x, ref)
                network_only("onnxruntime, all, 1 thread", OrtOptions(o, "ORT_ENABLE_ALL", 1), x, ref)
                network_only("openvino f32", OpenVinoEngine(o, threads=t), x, ref)
                network_only("openvino f32, 1 thread", OpenVinoEngine(o, threads=1), x, ref)
                network_only("openvino bf16", OpenVinoBf16(o, t), x, ref)
                network_only("onnxruntime int8", OnnxRuntimeEngine(str(int8_file), threads=t), x, ref)
                network_only("openvino int8", OpenVinoEngine(str(int8_file), threads=t), x, ref)

            n = images[arch]
            paths = (files * (1 + n // len(files)))[:n] if n > len(files) else files[:: len(files) // n][:n]
            stdin = "\n".join(paths) + "\n"
            out = str(tmp / "rows.csv")
            runs = {
                "microcli --engine torch": [str(bundle), "--engine", "torch"],
                "microcli --engine torch --precision bf16": [str(bundle), "--engine", "torch", "--precision", "bf16"],
                "microcli --engine onnxruntime": [str(bundle), "--engine", "onnxruntime"],
                "microcli --engine openvino (= auto)": [str(bundle), "--engine", "openvino"],
                "microcli model.onnx --engine onnxruntime": [str(onnx_file), "--engine", "onnxruntime"],
                "microcli model.onnx --engine openvino": [str(onnx_file), "--engine", "openvino"],
                "int8.onnx --engine openvino (classes differ)": [str(int8_file), "--engine", "openvino"],
            }
            best = {k: float("inf") for k in ["plain loop", *runs]}
            for _ in range(args.runs):
                t0 = time.perf_counter()
                _plain.predict(paths, arch, len(classes), args.size)
                best["plain loop"] = min(best["plain loop"], time.perf_counter() - t0)
                for name, a in runs.items():
                    best[name] = min(best[name], microcli("predict", a[0], "-", "-o", out, "--force", *a[1:],
                                                          stdin=stdin, env=env))
            print(f" whole process, {n} images (best of {args.runs}; first-run conversion of the bundle: "
                  f"onnxruntime {cold['onnxruntime']:.1f} s, openvino {cold['openvino']:.1f} s for a few images):")
            base = n / best["plain loop"]
            for name, s in best.items():
                print(f"  {name:44} {n / s:8.1f} img/s  {n / s / base:5.2f}x the plain loop")
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
