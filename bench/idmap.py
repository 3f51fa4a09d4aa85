"""Id map lookups (issue 21): the in-memory dict against the mapped id map, side by side.

`--ids` ids shaped like a catalogue's (`item-<n>`, one in ten with a non-ASCII suffix, one in a
thousand 120 characters long) are written as the exporter writes them (JSON list and
`models/mapped_ids.py`'s file); then, in this one process, each store answers the same
queries, the two stores alternating over `--repeat` rounds (the fastest round kept, as the
machine is shared):

- `get` of a known id and of an unknown id (one call an id: the user id of a request);
- `get_rows` of 50 ids at once (a posted history, one call);
- `ids[row]` (row -> id: every recommended item);

and each store's memory in a worker: a child process builds the dict from the JSON list (as
a version without the mapped file is served), or maps the file while another child holds it
mapped (a second worker), then looks up every third id; its private and shared growth are
read from /proc/self/smaps_rollup.

    python bench/idmap.py --ids 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.idmap import IdMap  # noqa: E402
from models.mapped_ids import map_ids, write_ids  # noqa: E402

HISTORY = 50

_CHILD = """
import json, sys
from pathlib import Path
from models.idmap import IdMap
from models.mapped_ids import map_ids

def rollup():
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split()[:2]
        out[key.rstrip(":")] = int(value) * 1024
    return out

before = rollup()
path = Path(sys.argv[2])
ids = (IdMap.mapped(map_ids(path)) if sys.argv[1] == "mapped"
       else IdMap.from_ids(json.loads(path.read_text(encoding="utf-8"))))
found = sum(ids.get(ids.ids[r]) == r for r in range(0, len(ids), 3))
after = rollup()
print(json.dumps({k: after[k] - before[k] for k in
                  ("Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty")}), flush=True)
sys.stdin.readline()
"""


def make_ids(n: int) -> list[str]:
    return [f"item-{i}" + ("-ü商" if i % 10 == 3 else "") + ("x" * 110 if i % 1000 == 7 else "")
            for i in range(n)]


def per_id_ns(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) / n * 1e9


def time_lookups(stores: dict[str, IdMap], ids: list[str], n_queries: int, repeat: int
                 ) -> dict[str, dict[str, float]]:
    """ns an id of each operation for each store, fastest of `repeat` alternating rounds."""
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(ids), n_queries)
    known = [ids[r] for r in rows.tolist()]
    unknown = [f"nope-{i}" for i in range(n_queries)]
    batches = [known[s:s + HISTORY] for s in range(0, n_queries, HISTORY)]
    row_list = rows.tolist()
    out: dict[str, dict[str, list[float]]] = {name: {} for name in stores}
    for _ in range(repeat):
        for name, m in stores.items():
            get, get_rows, column = m.get, m.get_rows, m.ids
            ops = {
                "get known": lambda get=get: [get(x) for x in known],
                "get unknown": lambda get=get: [get(x) for x in unknown],
                f"get_rows of {HISTORY}": lambda g=get_rows: [g(b) for b in batches],
                "ids[row]": lambda c=column: [c[r] for r in row_list],
            }
            for op, fn in ops.items():
                out[name].setdefault(op, []).append(per_id_ns(fn, n_queries))
    for name, m in stores.items():  # both stores answered alike
        assert m.get_rows(known).tolist() == row_list, name
    return {name: {op: min(v) for op, v in ops_.items()} for name, ops_ in out.items()}


def worker_memory(kind: str, path: Path) -> dict[str, int]:
    """Growth of a child that loads the map (`mapped`: while a first child holds it)."""
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": os.environ["PATH"]}
    procs = []
    try:
        for _ in range(2 if kind == "mapped" else 1):
            proc = subprocess.Popen([sys.executable, "-c", _CHILD, kind, str(path)], cwd=ROOT,
                                    env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True)
            procs.append(proc)
            assert proc.stdout is not None
            got = json.loads(proc.stdout.readline())
    finally:
        for proc in procs:
            proc.communicate("\n", timeout=120)
    return {"private": got["Private_Clean"] + got["Private_Dirty"],
            "shared": got["Shared_Clean"] + got["Shared_Dirty"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ids", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    ids = make_ids(args.ids)
    with tempfile.TemporaryDirectory() as tmp:
        json_path, mapped_path = Path(tmp) / "item_ids.json", Path(tmp) / "item_idmap.npz"
        json_path.write_text(json.dumps(ids) + "\n", encoding="utf-8")
        t0 = time.perf_counter()
        write_ids(mapped_path, ids)
        write_s = time.perf_counter() - t0
        print(f"{args.ids} ids: JSON {json_path.stat().st_size / 2**20:.1f} MB, mapped file "
              f"{mapped_path.stat().st_size / 2**20:.1f} MB, written in {write_s:.1f} s")
        stores = {"dict": IdMap.from_ids(ids), "mapped": IdMap.mapped(map_ids(mapped_path))}
        times = time_lookups(stores, ids, args.queries, args.repeat)
        print(f"\nns an id (fastest of {args.repeat} alternating rounds, {args.queries} "
              f"queries):")
        print(f"{'operation':<16}{'dict':>10}{'mapped':>10}{'ratio':>8}")
        for op in times["dict"]:
            d, m = times["dict"][op], times["mapped"][op]
            print(f"{op:<16}{d:>10.0f}{m:>10.0f}{m / d:>7.1f}x")
        del stores
        print("\na worker's growth after looking up every third id (smaps_rollup):")
        for kind, path in (("dict", json_path), ("mapped", mapped_path)):
            mem = worker_memory(kind, path)
            print(f"  {kind:<7} private {mem['private'] / 2**20:7.1f} MB, shared "
                  f"{mem['shared'] / 2**20:6.1f} MB"
                  + ("  (a second worker: the first holds the map)" if kind == "mapped" else ""))
    print(f"\nload average {os.getloadavg()[0]:.1f} (2 vCPU shared machine)")


if __name__ == "__main__":
    main()
