from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..options import ReportFormat
from .common import ModelArg, errors_to_exit, out


def info(
    model: ModelArg,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="table or json.")] = ReportFormat.table,
) -> None:
    """Show what a model file holds: architecture, parameters, classes, input, preprocessing, training
    data and final metrics, versions; for an exported file also how it was exported and checked. Reads
    a bundle as plain data only (weights_only), an ONNX or TorchScript file's metadata without running it.

    Example: microcli info runs/lenet --format json | jq .classes
    """
    from ..modelfile import load_model

    with errors_to_exit():
        b = load_model(model)
    data = {
        "path": b.path, "kind": b.kind, "arch": b.arch, "parameters": b.parameters,
        "classes": b.classes, "input": b.input.to_dict(),
        "preprocess": str(b.input.get_pipeline()) or None, "data": b.data_summary, "metrics": b.metrics,
        "train_config": b.train_config, "versions": b.versions,
        "resumable": b.resumable or (Path(model).is_dir() and (Path(model) / "last.pt").is_file()),
    }
    if b.export:
        data["export"] = b.export
    if fmt == ReportFormat.json:
        print(json.dumps(data, indent=2))
        return
    from rich.table import Table

    t = Table(title=f"{'model bundle' if b.kind == 'bundle' else b.kind + ' model'} {b.path}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value", overflow="fold")
    spec = b.input
    rows = [("architecture", b.arch), ("parameters", f"{data['parameters']:,}"),
            ("classes", f"{len(b.classes)}: " + ", ".join(b.classes)),
            ("input", f"{spec.channels} channel(s), {spec.img_size} x {spec.img_size} px, fit={spec.fit}"
                      + (f", images up to {spec.whole} px evaluated whole" if spec.largest_input > spec.img_size
                         else ", evaluated on tiles" if spec.fit == "crop" else "")),
            ("normalisation", "mean " + ", ".join(f"{m:.4f}" for m in spec.mean) + "; std "
             + ", ".join(f"{s:.4f}" for s in spec.std)),
            ("preprocess", data["preprocess"] or "none"),
            ("training data", ", ".join(f"{k}={v}" for k, v in b.data_summary.items() if k != "train_per_class")),
            ("metrics", ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b.metrics.items())),
            ("versions", ", ".join(f"{k} {v}" for k, v in b.versions.items())),
            ("resumable (last.pt)", ("yes" + (" (RUN/last.pt)" if not b.resumable else "")) if data["resumable"]
             else "no")]
    if b.export:  # an exported file: how it was made replaces "resumable"
        e, check = b.export, b.export.get("check", {})
        how = f"{e.get('format')} by {e.get('exporter')}" + (f", opset {e['opset']}" if "opset" in e else "")
        rows[-1] = ("exported", f"{how}, dynamic batch; " + ", ".join(f"{k} {v}" for k, v in e.get("versions",
                                                                                                    {}).items()))
        if check:
            rows.append(("export check", f"max softmax difference {check.get('max_abs_diff', float('nan')):.2g} "
                                         f"(tolerance {check.get('tolerance')}) on {check.get('images')}"))
    for r in rows:
        t.add_row(*r)
    out.print(t)
