"""`sac data`: convert original dataset downloads to the standard layout and make reproducible splits.

    sac data convert {monuseg,dsb2018,glas} RAW_DIR OUT_ROOT [--split NAME]
    sac data split ROOT --from train --to val --fraction 0.2 --seed 0 [--copy]

See docs/data.md for the layouts and the exact conversion rules.
"""

# sac.data.convert imports only the standard library at module level (numpy inside its functions), so --help stays
# fast while the list of datasets has one home.
from sac.data.convert import DATASETS

HELP = "Convert original dataset downloads and make reproducible splits."


def add_arguments(parser):
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fmt = parser.formatter_class  # sac's own: shows defaults, like every other subcommand
    c = sub.add_parser("convert", help="convert an original download to <OUT_ROOT>/<split>/{images,labels}",
                       formatter_class=fmt)
    c.add_argument("dataset", choices=DATASETS, help="which dataset RAW_DIR holds")
    c.add_argument("raw_dir", metavar="RAW_DIR", help="folder of the original download")
    c.add_argument("out_root", metavar="OUT_ROOT", help="output dataset root")
    c.add_argument("--split", default=None,
                   help="output split for monuseg/dsb2018 (None = train); for glas, convert only this "
                        "split (train, testA or testB; None = all)")
    s = sub.add_parser("split", help="move a random fraction of one split into another (recorded in "
                                     "ROOT/split_<to>.json)", formatter_class=fmt)
    s.add_argument("root", metavar="ROOT", help="dataset root in the standard layout")
    s.add_argument("--from", dest="from_split", default="train", help="split to take images from")
    s.add_argument("--to", dest="to_split", default="val", help="split to create / add to")
    s.add_argument("--fraction", type=float, default=0.2, help="fraction of images to move")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same split)")
    s.add_argument("--copy", action="store_true", help="copy instead of move (images then sit in both splits)")


def run(args) -> int:
    if args.data_command == "convert":
        from tqdm import tqdm

        from sac.data.convert import convert

        summary = convert(args.dataset, args.raw_dir, args.out_root, args.split,
                          progress=lambda it: tqdm(it, desc=f"convert {args.dataset}", unit="image"))
        for line in summary.lines():
            print(line)
        return 0
    from sac.data.split import make_split

    rec = make_split(args.root, args.from_split, args.to_split, args.fraction, args.seed, copy=args.copy)
    print(f"{rec['mode']}d {rec['n_to']} of {rec['n_from_before']} images from {rec['from']!r} to {rec['to']!r} "
          f"(seed {rec['seed']}); recorded in {args.root}/split_{rec['to']}.json")
    return 0
