"""``python -m benchmarks list [regression|study]`` | ``python -m benchmarks run NAME [--tag TAG] [options]``."""

from __future__ import annotations

import argparse
import sys

from benchmarks import harness, load, study_names


def study_parser(name: str, module) -> argparse.ArgumentParser:
    """A study's argument parser: its own options plus the harness's --tag and --no-write."""
    doc = (module.__doc__ or name).strip().splitlines()[0]
    ap = argparse.ArgumentParser(prog=f"python -m benchmarks run {name}", description=doc)
    module.add_arguments(ap)
    ap.add_argument("--tag", default=None,
                    help=f"a variant's name: results go to benchmarks/results/{name}_TAG.json (recorded in the file)")
    ap.add_argument("--no-write", action="store_true", help="print the result, write no results file")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in ("list", "run"):
        print(__doc__.strip(), file=sys.stderr if argv and argv[0] not in ("-h", "--help") else sys.stdout)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "list":  # every study, or only one kind (regression timings apart from one-off studies)
        for name in study_names():
            m = load(name)
            if len(argv) > 1 and m.KIND != argv[1]:
                continue
            doc = (m.__doc__ or "").strip().splitlines()
            print(f"{name:26} {m.KIND:10} {doc[0] if doc else ''}")
        return 0
    if len(argv) < 2:
        print("usage: python -m benchmarks run NAME [options] (names: python -m benchmarks list)", file=sys.stderr)
        return 2
    name = argv[1]
    try:
        module = load(name)
    except KeyError:
        print(f"error: no study {name!r}; choose from {', '.join(study_names())}", file=sys.stderr)
        return 2
    args = study_parser(name, module).parse_args(argv[2:])
    doc = module.run(args)
    if isinstance(doc, int):  # a study that could not run says why and returns an exit code
        return doc
    if doc is None or args.no_write:
        return 0
    text, code = doc.pop("_text", None), doc.pop("_exit", 0)  # a Markdown rendering; a failed bar's exit code
    path = harness.write_result(name, doc, tag=args.tag, text=text)
    print(f"wrote {path.relative_to(harness.ROOT) if path.is_relative_to(harness.ROOT) else path}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
