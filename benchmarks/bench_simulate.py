"""Simulator speed against pymatgen's XRDCalculator on the same CoRE MOF 2019 structures.

    .venv/bin/python benchmarks/bench_simulate.py [--count 40] [--repeat 3]

Takes the first ``count`` CSD-named ASR structures in sha256 order of the file name (a fixed,
varied sample of cell sizes), parses each once, then times the simulation alone (our
sticks + broadened pattern vs pymatgen's ``get_pattern``, 5-50 deg, Cu K-alpha1), best of
``repeat``, and reports the cosine between the two broadened patterns.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import time
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from pymatgen.analysis.diffraction.xrd import XRDCalculator
    from pymatgen.core import Structure

    from xrd_agent.library.cif import parse_cif
    from xrd_agent.library.coremof import DATASETS, iter_cifs, load_determinations
    from xrd_agent.library.simulate import simulate
    from xrd_agent.peakshape import broaden

    names = sorted((d.files[DATASETS[0]] for d in load_determinations().values() if DATASETS[0] in d.files),
                   key=lambda n: hashlib.sha256(n.encode()).hexdigest())[: args.count]
    texts = {n: t for _, n, t in iter_cifs({DATASETS[0]: set(names)})}
    calc = XRDCalculator(wavelength=1.5406)
    rows = []
    for name in names:
        text = texts[name]
        try:
            parsed = parse_cif(text, name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                structure = Structure.from_str(text, fmt="cif")
        except Exception as exc:  # benchmark: report and go on
            print(f"{name}: skipped ({exc})")
            continue
        ours_t, theirs_t = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            sim = simulate(parsed.crystal)
            ours_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            ref = calc.get_pattern(structure, two_theta_range=(5, 50))
            theirs = broaden(np.asarray(ref.x), np.asarray(ref.y))
            theirs_t.append(time.perf_counter() - t)
        a = sim.pattern.astype(float)
        cos = float(a @ theirs / np.linalg.norm(a) / np.linalg.norm(theirs))
        rows.append((name, len(parsed.crystal), min(ours_t), min(theirs_t), cos))
        print(f"{re.sub(r'_.*', '', name):10s} {len(parsed.crystal):5d} atoms  ours {min(ours_t) * 1e3:8.1f} ms  "
              f"pymatgen {min(theirs_t) * 1e3:8.1f} ms  cosine {cos:.5f}")
    ours = np.array([r[2] for r in rows])
    theirs = np.array([r[3] for r in rows])
    cos = np.array([r[4] for r in rows])
    print(f"\n{len(rows)} structures ({int(np.median([r[1] for r in rows]))} atoms median, "
          f"{max(r[1] for r in rows)} max)")
    print(f"total: ours {ours.sum():.2f} s, pymatgen {theirs.sum():.2f} s, speed-up {theirs.sum() / ours.sum():.1f}x; "
          f"per structure median ours {np.median(ours) * 1e3:.1f} ms, pymatgen {np.median(theirs) * 1e3:.1f} ms")
    print(f"cosine ours vs pymatgen: min {cos.min():.5f}, median {np.median(cos):.5f}")


if __name__ == "__main__":
    main()
