"""`monkey-data`: get, check and fingerprint the datasets the harness reads.

monkey-data download dreambooth --dest DIR      fetch google/dreambooth (network) and verify it
monkey-data download magic --dest DIR           save jlbaker361/mtg for offline use (network)
monkey-data verify dreambooth DIR               which known copy DIR is (original or resized-512)
monkey-data checksum DIR --out FILE             write a sha256 list of DIR (LICENSE.md + dataset/)
monkey-data prefetch [--list|--dry-run] [overrides...]   fetch every hub file a monkey-bench command reads
"""

import argparse
import sys
from pathlib import Path

from monkey.datasets.checksums import compute_checksums, write_checksums
from monkey.datasets.download import (
    DREAMBOOTH_URL,
    covered_files,
    download_dreambooth,
    identify_dreambooth,
)
from monkey.datasets.magic import HUB_ID, export_hub_dataset
from monkey.errors import MonkeyError


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="monkey-data", description=__doc__.split("\n\n")[0])
    commands = root.add_subparsers(dest="command", required=True)

    download = commands.add_parser("download", help="fetch a dataset (needs a network)")
    download.add_argument("dataset", choices=["dreambooth", "magic"])
    download.add_argument("--dest", type=Path, required=True, help="folder to write to")
    download.add_argument("--url", default=DREAMBOOTH_URL, help="dreambooth: archive URL (a mirror, file://)")
    download.add_argument("--checksums", type=Path, help="dreambooth: sha256 list to verify against")
    download.add_argument("--hub-id", default=HUB_ID, help="magic: hub dataset id")
    download.add_argument("--split", default="train", help="magic: split")
    download.add_argument("--revision", default=None, help="magic: hub revision (commit) to pin")

    verify = commands.add_parser("verify", help="check a local copy against the shipped checksums")
    verify.add_argument("dataset", choices=["dreambooth"])
    verify.add_argument("root", type=Path)

    checksum = commands.add_parser("checksum", help="write a sha256 list of a DreamBooth-layout folder")
    checksum.add_argument("root", type=Path)
    checksum.add_argument("--out", type=Path, required=True)
    checksum.add_argument("--note", action="append", default=[], help="header line saying what the copy is")

    prefetch = commands.add_parser(
        "prefetch", help="fetch the hub files `monkey-bench <overrides>` reads (all jobs of its sweep)"
    )
    mode = prefetch.add_mutually_exclusive_group()
    mode.add_argument("--list", dest="mode", action="store_const", const="list", help="only print what is needed")
    mode.add_argument(
        "--dry-run", dest="mode", action="store_const", const="dry-run", help="print what the local cache lacks"
    )
    prefetch.set_defaults(mode="download")
    prefetch.add_argument("overrides", nargs="*", help="Hydra overrides, as given to monkey-bench")
    return root


def run(args: argparse.Namespace) -> int:
    if args.command == "prefetch":
        from monkey.prefetch import prefetch  # imported on use: it pulls in torch and diffusers

        return prefetch(args.overrides, args.mode)
    if args.command == "download" and args.dataset == "dreambooth":
        report = download_dreambooth(args.dest, url=args.url, checksums=args.checksums)
        print(f"{args.dest}: {report.summary()}; run with dataset.root={args.dest} dataset.images=all")
        return 0
    if args.command == "download":
        export_hub_dataset(args.dest, args.hub_id, args.split, args.revision)
        print(f"saved {args.hub_id} ({args.split}) to {args.dest}; run with dataset=magic dataset.path={args.dest}")
        return 0
    if args.command == "verify":
        identified = identify_dreambooth(args.root)
        print(identified.describe(args.root))
        return 0 if identified.variant else 1
    names = covered_files(args.root)
    if not names:
        raise MonkeyError(f"{args.root} holds neither LICENSE.md nor a dataset/ folder")
    header = [*args.note, "covers: LICENSE.md and every file under dataset/", "format: sha256sum (-c reads it)"]
    write_checksums(args.out, compute_checksums(args.root, names), header)
    print(f"wrote {len(names)} checksums to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except MonkeyError as err:
        print(f"monkey-data: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
