"""The `tune-eskd` command line. Thin: it parses flags and calls the library."""
import argparse
import errno
import os
import sys

from .errors import UsageError

STORAGE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; tune-eskd prints one line that names the problem and the fix."""

    def error(self, message: str):
        print(f"tune-eskd: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def _config_flags(p: argparse.ArgumentParser, cls) -> None:
    """One flag per field of a run config (config.py) or of SweepOptions: the field's own default, help text and
    type. A bool field that defaults to True gets a --no-NAME flag."""
    import dataclasses
    import typing

    from .config import default_of, value_type

    for f in dataclasses.fields(cls):
        if not f.metadata.get("flag"):
            continue
        flag, kind, optional = "--" + f.name.replace("_", "-"), *value_type(f)
        helptext = f.metadata["description"].replace("%", "%%")  # argparse formats help with %
        default = default_of(f)
        if default is not None and default is not False:
            helptext += f" (default: {' '.join(map(str, default)) if isinstance(default, list) else default})"
        metavar = f.metadata.get("metavar")
        if kind is bool and default:
            p.add_argument("--no-" + flag[2:], dest=f.name, action="store_false", help=f.metadata["description"])
        elif kind is bool:
            p.add_argument(flag, action="store_true", help=helptext)
        elif typing.get_origin(kind) is list:
            p.add_argument(flag, type=int, nargs="*" if optional else "+", default=default, help=helptext,
                           metavar=metavar)
        elif typing.get_origin(kind) is typing.Literal:  # checked by the config, with its one-line message
            p.add_argument(flag, default=default, help=helptext, metavar="|".join(typing.get_args(kind)))
        else:
            p.add_argument(flag, type=kind, default=default, help=helptext, metavar=metavar)


def _run_flags(p: argparse.ArgumentParser, cls) -> None:
    """A single run's flags: its config's, then where and how it runs."""
    _config_flags(p, cls)
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu) | cpu | cuda[:N] | mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic cuDNN/cuBLAS kernels: bit-identical reruns on one GPU, somewhat slower")
    p.add_argument("--out", required=True, help="output directory")


def _config(cls, a: argparse.Namespace, **fixed):
    """The config the flags set, with `fixed` fields (data_hash, set once the data is loaded, has no flag)."""
    import dataclasses

    return cls(**fixed, **{f.name: getattr(a, f.name) for f in dataclasses.fields(cls) if f.metadata.get("flag")})


def cmd_models(a) -> None:
    from .models import MODELS, build_model, count_macs, count_params

    print(f"{'model':<10} {'params':>12} {'MACs / image':>14}  family")
    for name, spec in MODELS.items():
        m = build_model(name, a.num_classes, a.width)
        channels = "-".join(str(c) for c in spec.widths)
        if len(spec.widths) == 3:
            family = f"He et al. CIFAR ResNet, {channels} channels, depth 6n+2"
        else:
            family = f"torchvision {spec.block.__name__}, {channels} channels"
        print(f"{name:<10} {count_params(m):>12,} {f'{count_macs(m) / 1e6:,.1f} M':>14}  {family}")


def cmd_train_teacher(a) -> None:
    from .config import TeacherConfig
    from .single_run import train_teacher

    train_teacher(_config(TeacherConfig, a), a.out, a.device, a.threads, a.deterministic)


def cmd_train_student(a) -> None:
    from .config import StudentConfig
    from .single_run import train_student

    train_student(_config(StudentConfig, a), a.teacher_snapshot, a.out, a.device, a.threads, a.deterministic)


def cmd_spaces(a) -> None:
    from search_spaces import KEYS, list_presets, load_space

    if a.keys:
        for key, spec in KEYS.items():
            role = f"{spec.scope}: " if spec.scope in ("teacher", "student") else ""
            sample = f" (sample: {', '.join(spec.distributions)})" if spec.distributions else ""
            print(f"{key:<14} default {spec.default!r:<16} {role}{spec.help}{sample}")
        return
    names = list_presets()
    width = max(len(name) for name in ["space", *names])
    print(f"{'space':<{width}} {'teachers':>8} {'students':>8}  description")
    for name in names:
        space = load_space(name)
        teachers, students = space.trial_counts()
        print(f"{name:<{width}} {teachers:>8} {students:>8}  {space.values['description']}")


def _sweep_options(a):
    import os

    from .experiment import SweepOptions

    storage = a.storage if "://" in a.storage else os.path.abspath(os.path.expanduser(a.storage))
    return _config(SweepOptions, a, storage=storage, name=a.name)


def cmd_sweep(a) -> int:
    from search_spaces import load_space, parse_overrides

    from .pipeline import run_sweep

    space = load_space(a.space, parse_overrides(a.set))
    return run_sweep(space, _sweep_options(a), overwrite=a.overwrite, dry_run=a.dry_run, force=a.force)


def cmd_resume(a) -> int:
    from .pipeline import resume_sweep

    return resume_sweep(a.experiment, address=a.address, local=a.local)


def cmd_stop(a) -> int:
    from .housekeeping import stop

    return stop(a.experiment)


def cmd_rm(a) -> int:
    from .housekeeping import rm

    return rm(a.experiment)


def cmd_gc(a) -> int:
    from .housekeeping import gc

    return gc(a.storage, yes=a.yes)


def cmd_import_teacher(a) -> None:
    from .import_teacher import import_teacher

    # `--epochs 3 6 9 CKPT_e3.pt ...`: argparse hands --epochs every word up to the next flag; the paths follow.
    epochs = []
    for word in a.epochs:
        if not word.isdigit():
            break
        epochs.append(int(word))
    checkpoints = a.epochs[len(epochs):] + a.checkpoints
    storage = a.storage if "://" in a.storage else os.path.abspath(os.path.expanduser(a.storage))
    name = a.name or a.arch
    written = import_teacher(name, a.arch, checkpoints, epochs, storage, dataset=a.dataset, width=a.width,
                             data_dir=a.data_dir, subset=a.subset, val_split=a.val_split, split_seed=a.split_seed,
                             device=a.device, overwrite=a.overwrite)
    for meta in written:
        print(f"epoch {meta['epoch']}: val_acc {meta['val_acc']:.4f} test_acc {meta['test_acc']:.4f} "
              f"<- {meta['imported']['from']}")
    print(f"imported teacher {name!r} ({a.arch}) into {storage}/snapshots/{written[0]['teacher_hash']}; "
          f"in a search space: teacher_import: {name}, snapshots: {[m['epoch'] for m in written]}")


def cmd_status(a) -> None:
    from .record import Experiment
    from .status import print_status

    print_status(Experiment.at(a.experiment))


def build_parser() -> argparse.ArgumentParser:
    from .config import StudentConfig, TeacherConfig
    from .experiment import SweepOptions

    parser = OneLineErrorParser(prog="tune-eskd", description="Early-Stopped Knowledge Distillation sweeps on Ray Tune.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list models with parameter counts and MACs")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--width", type=float, default=1.0)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train-teacher", help="train one teacher, saving snapshots at chosen epochs")
    _run_flags(p, TeacherConfig)
    p.set_defaults(func=cmd_train_teacher)

    p = sub.add_parser("train-student", help="distill one student from a teacher snapshot (KD, then CE)")
    _run_flags(p, StudentConfig)
    p.add_argument("--teacher-snapshot", required=True, help="a snapshot .pt written by train-teacher")
    p.set_defaults(func=cmd_train_student)

    p = sub.add_parser("spaces", help="list the named search spaces with their trial counts")
    p.add_argument("--keys", action="store_true", help="list the keys a search space may set")
    p.set_defaults(func=cmd_spaces)

    p = sub.add_parser("sweep", help="run an ESKD sweep on Ray Tune: teachers, then students")
    p.add_argument("--space", default="quick", help="a preset name (see `tune-eskd spaces`) or a .yaml file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set 'alpha=[0.5,0.9]' (repeatable)")
    p.add_argument("--storage", default="~/tune-eskd-runs", help="absolute path, NFS path or s3:// URI")
    p.add_argument("--name", default="sweep", help="experiment name (folder under --storage)")
    _config_flags(p, SweepOptions)
    p.add_argument("--overwrite", action="store_true", help="delete an existing experiment of this name first")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the plan (trials, epochs, disk) without starting Ray or writing anything")
    p.add_argument("--force", action="store_true", help="start even when the storage has less free space than the plan needs")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("resume", help="continue an interrupted sweep")
    p.add_argument("experiment", help="STORAGE/NAME, as printed by `tune-eskd sweep`")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--address", default=None,
                       help="run on this Ray cluster instead of the one the sweep recorded, e.g. HEAD:6379")
    where.add_argument("--local", action="store_true",
                       help="run on a private local Ray instead of the cluster the sweep recorded")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("import-teacher", help="import teacher checkpoints (state_dicts) into the snapshot store")
    p.add_argument("--arch", required=True, help="the model they were trained as (see `tune-eskd models`)")
    p.add_argument("--epochs", nargs="+", required=True, metavar="EPOCH", help="the epoch of each checkpoint, in order")
    p.add_argument("checkpoints", nargs="*", metavar="CKPT", help="state_dict files (.pt/.pth), one per epoch")
    p.add_argument("--name", default=None, help="what spaces call it (teacher_import: NAME); default: the arch")
    p.add_argument("--storage", default="~/tune-eskd-runs", help="the sweeps' --storage (its snapshot store)")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--dataset", default="synthetic", help="the dataset the teacher was trained on")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--val-split", type=float, default=0.1)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="where accuracy is measured: cpu | cuda | auto")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier import of the same name")
    p.set_defaults(func=cmd_import_teacher)

    p = sub.add_parser("status", help="trial counts by state, best so far, what is left")
    p.add_argument("experiment")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("stop", help="stop a running sweep as Ctrl-C does (it can be resumed)")
    p.add_argument("experiment", help="STORAGE/NAME of a sweep whose driver runs on this machine")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("rm", help="delete an experiment (not the shared snapshots and soft labels: see gc)")
    p.add_argument("experiment", help="STORAGE/NAME")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser("gc", help="list (--yes: delete) snapshots and soft labels no experiment references")
    p.add_argument("storage", help="the --storage of your sweeps")
    p.add_argument("--yes", action="store_true", help="delete what is listed")
    p.set_defaults(func=cmd_gc)

    from analysis.cli import add_subcommands

    add_subcommands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except UsageError as exc:
        print(f"tune-eskd: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tune-eskd models | head` closed the pipe: not an error (before OSError, its base)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush cannot fail again
        return 0
    except OSError as exc:
        # Storage that refuses a write (read-only, no permission, full) is the user's to fix, not a bug: one line
        # naming the path, whichever command hit it (e.g. `report` into a read-only experiment). Other OSErrors
        # keep their traceback.
        if exc.errno not in STORAGE_ERRNOS:
            raise
        print(f"tune-eskd: error: the storage refused a write ({' '.join(str(exc).split())}): make it writable "
              f"or free some space, then run the command again", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tune-eskd: interrupted", file=sys.stderr)
        return 130
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
