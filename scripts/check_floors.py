#!/usr/bin/env python3
"""Checks that every header of include/iat/ stands on a floor and includes only headers on its floor or below.

The floors (README.md, "Layout"): 0 foundations, 1 the shared vocabulary, 2 the components, 3 what is
composed from components, 4 data parallelism, 5 the umbrella header. A header's floor is the first rule
below that matches its path. Exit status 1 names each header without a floor and each include that reaches
up; 0 prints the floors.
Usage: scripts/check_floors.py [INCLUDE_DIR]   (default: include/ beside this script's folder)
"""
import fnmatch
import pathlib
import re
import sys

FLOORS = [
    (0, ["iat/version.hpp", "iat/options_field.hpp", "iat/cpu_allocator.hpp", "iat/detail/compat.hpp", "iat/detail/checks.hpp",
         "iat/detail/file_io.hpp", "iat/detail/archive_checksum.hpp", "iat/detail/compiled.hpp",
         "iat/detail/batch_draw.hpp"]),
    (1, ["iat/model_ref.hpp", "iat/precision.hpp", "iat/threat_model.hpp", "iat/functional/losses.hpp",
         "iat/io/*.hpp", "iat/data/dataset.hpp"]),
    (2, ["iat/attacks/*.hpp", "iat/attacks/detail/*.hpp", "iat/inverse/*.hpp", "iat/models/*.hpp", "iat/data/*.hpp",
         "iat/data/detail/*.hpp", "iat/functional/*.hpp", "iat/train/checkpoint.hpp", "iat/train/ema.hpp",
         "iat/train/one_cycle.hpp"]),
    (3, ["iat/eval/*.hpp", "iat/train/*.hpp"]),
    (4, ["iat/distributed/*.hpp"]),
    (5, ["iat/iat.hpp"]),
]


def floor_of(name):
    for floor, patterns in FLOORS:
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return floor
    return None


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent / "include")
    headers = sorted(p.relative_to(root).as_posix() for p in (root / "iat").rglob("*.hpp"))
    if not headers:
        print(f"check_floors: no headers under {root}/iat", file=sys.stderr)
        return 1
    problems = []
    for h in headers:
        f = floor_of(h)
        if f is None:
            problems.append(f"{h}: on no floor (add it to scripts/check_floors.py and README.md's Layout)")
            continue
        for inc in re.findall(r"^#include <(iat/[^>]+)>", (root / h).read_text(encoding="utf-8"), re.M):
            g = floor_of(inc)
            if g is not None and g > f:
                problems.append(f"{h} (floor {f}) includes {inc} (floor {g}): an include may not reach up")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    for floor, _ in FLOORS:
        print(f"floor {floor}: " + " ".join(h for h in headers if floor_of(h) == floor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
