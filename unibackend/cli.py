"""The ``unibackend`` command: ``backends``, ``conformance``, ``bench``, ``export-onnx``."""
from __future__ import annotations

import argparse
import sys


def _cmd_backends(argv):
    from . import backends

    p = argparse.ArgumentParser(prog="unibackend backends", description="List every known backend plugin.")
    p.parse_args(argv)
    rows = backends()
    width = max(len(r.name) for r in rows)
    for r in rows:
        state = f"installed {r.version}".strip() if r.installed else f"not installed ({r.reason})"
        caps = ",".join(r.capabilities) or "-"
        alias = f"  (alias of {r.alias_of})" if r.alias_of else ""
        print(f"{r.name:<{width}}  {state:<30}  {caps}{alias}")
    return 0


def _cmd_conformance(argv):
    from .conformance.runner import main

    return main(argv)


def _cmd_bench(argv):
    from .benchmarks.runner import main

    return main(argv)


def _cmd_export_onnx(argv):
    from .nn import ModelFileError, export_onnx

    p = argparse.ArgumentParser(prog="unibackend export-onnx",
                                description="Turn a saved unibackend.nn model (.npz) into an .onnx file "
                                            "(open batch axis) that ONNX Runtime serves without unibackend.")
    p.add_argument("model", help="the saved model (.npz, from Model.save)")
    p.add_argument("output", help="the .onnx file to write")
    a = p.parse_args(argv)
    try:
        out = export_onnx(a.model, a.output)
    except (ModelFileError, FileNotFoundError) as e:
        print(f"unibackend export-onnx: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


COMMANDS = {
    "backends": (_cmd_backends, "list the backend plugins, installed or not, with their capabilities"),
    "conformance": (_cmd_conformance, "check every installed backend against the numpy reference"),
    "bench": (_cmd_bench, "benchmark the unified ops against native calls"),
    "export-onnx": (_cmd_export_onnx, "turn a saved nn model (.npz) into an .onnx file"),
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: unibackend {" + ",".join(COMMANDS) + "} [options]\n")
        for name, (_, helptext) in COMMANDS.items():
            print(f"  {name:<12} {helptext}")
        return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    fn, _ = COMMANDS[argv[0]]
    return fn(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
