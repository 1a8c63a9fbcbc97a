"""Command line: ``python -m energyad list``, ``reproduce <id>``, ``bench`` and ``pack``."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m energyad", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the experiments")
    rep = sub.add_parser("reproduce", help="run an experiment and write DIR/<id>.json")
    rep.add_argument("experiment", help="experiment id (see `list`), or `all`")
    rep.add_argument("--profile", choices=("quick", "full"), default=None,
                     help="default: $ENERGYAD_PROFILE or quick")
    rep.add_argument("--out", default="runs", help="output folder (default: runs)")
    rep.add_argument("--device", default=None, help="cuda, mps or cpu (default: automatic)")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--force", action="store_true", help="with `all`: rerun experiments that have a result")
    rep.add_argument("--max-minutes", type=float, default=None,
                     help="stop cleanly before this many minutes, saving progress; exit code 75 means "
                          "'run the same command again to resume'")
    rep.add_argument("--reuse-checkpoints", action="store_true",
                     help="reuse finished units that other code wrote (refused by default)")
    ben = sub.add_parser("bench", help="throughput of every method at its full-profile size; writes DIR/bench.json")
    ben.add_argument("--device", default=None, help="cuda, mps or cpu (default: automatic)")
    ben.add_argument("--out", default="bench", help="output folder (default: bench)")
    ben.add_argument("--size", choices=("full", "tiny"), default="full", help="tiny: toy sizes, for tests")
    pk = sub.add_parser("pack", help="copy the code and one call's data into a folder to carry to a GPU machine")
    pk.add_argument("categories", nargs="*", help="MVTec AD categories under the data root")
    pk.add_argument("--mnist", action="store_true", help="add MNIST (MNIST/raw under the data root)")
    pk.add_argument("--wheels", default=None, help="a folder of *.whl files the machine lacks (e.g. kornia)")
    pk.add_argument("--out", default="gpu", help="the folder to carry (default: gpu)")
    args = parser.parse_args(argv)

    if args.cmd == "pack":
        from .data import DataError
        from .pack import pack

        try:
            info = pack(args.out, args.categories, args.mnist, args.wheels)
        except (DataError, ValueError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{args.out}: {info['files']} files, {info['bytes'] / 2 ** 20:.1f} MiB; on the device: "
              f"bash {args.out}/run.sh EXPERIMENT [MINUTES]")
        return 0

    if args.cmd == "bench":
        from .bench import run as bench

        bench(args.device, args.out, args.size)
        return 0

    from .experiments import load_all

    if args.cmd == "list":
        reg = load_all()
        width = max((len(k) for k in reg), default=10)
        for id, exp in sorted(reg.items(), key=lambda kv: (kv[1].chapter, kv[0])):
            needs = f"  [needs: {', '.join(exp.needs)}]" if exp.needs else ""
            print(f"{id:<{width}}  {exp.chapter:<12} {'/'.join(exp.profiles):<11} {exp.description}{needs}")
        return 0

    from .experiments.resume import EXIT_RESUME, StopForResume
    from .experiments.runner import CheckpointMismatch, run, run_all

    if args.experiment == "all":
        try:
            status = run_all(args.profile, args.out, args.device, args.seed, args.force,
                             reuse_checkpoints=args.reuse_checkpoints, max_minutes=args.max_minutes)
        except StopForResume as stop:
            print(f"stopped at --max-minutes: {stop}. Exit {EXIT_RESUME}: run the same command again to resume.")
            return EXIT_RESUME
        failed = [k for k, v in status.items() if v.startswith("failed")]
        print(f"{len(status)} experiments: {sum(v.startswith('done') for v in status.values())} run, "
              f"{sum(v.startswith('skipped') for v in status.values())} skipped, {len(failed)} failed")
        return 1 if failed else 0
    try:
        res = run(args.experiment, args.profile, args.out, args.device, args.seed, args.reuse_checkpoints,
                  args.max_minutes)
    except StopForResume as stop:
        print(f"stopped at --max-minutes: {stop}. Exit {EXIT_RESUME}: run the same command again to resume.")
        return EXIT_RESUME
    except (KeyError, ValueError, FileNotFoundError, CheckpointMismatch) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/{res['experiment']}.json ({res['profile']} profile, "
          f"{res['provenance']['seconds']:.1f} s on {res['provenance']['device']})")
    for k, v in res["metrics"].items():
        print(f"  {k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
