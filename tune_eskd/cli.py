"""The `tune-eskd` command line. Thin: it parses flags and calls the library."""
import argparse
import sys

from .errors import UsageError


def _common_training_flags(p: argparse.ArgumentParser, model: str) -> None:
    p.add_argument("--model", default=model, help="model name (see `tune-eskd models`)")
    p.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    p.add_argument("--dataset", default="synthetic",
                   help="synthetic | cifar10 | cifar100 | imagefolder:PATH | npz:FILE (default: synthetic)")
    p.add_argument("--data-dir", default=None, help="where cifar10/cifar100 live or are downloaded to")
    p.add_argument("--subset", type=int, default=None, help="keep this many training images (stratified)")
    p.add_argument("--val-split", type=float, default=0.1, help="fraction of train held out for validation")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--schedule", choices=["multistep", "cosine"], default="multistep")
    p.add_argument("--milestones", type=int, nargs="*", default=None,
                   help="MultiStepLR epochs (default: 50%% and 75%% of --epochs)")
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="drives init, data order and augmentation")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu) | cpu | cuda[:N] | mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", required=True, help="output directory")


def _config_kwargs(a: argparse.Namespace) -> dict:
    return dict(model=a.model, width=a.width, dataset=a.dataset, data_dir=a.data_dir, subset=a.subset,
                val_split=a.val_split, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, momentum=a.momentum,
                weight_decay=a.weight_decay, nesterov=a.nesterov, schedule=a.schedule, milestones=a.milestones,
                gamma=a.gamma, seed=a.seed)


def cmd_models(a) -> None:
    from .models import MODELS, build_model, count_macs, count_params

    print(f"{'model':<10} {'params':>12} {'MACs/image':>14}")
    for name in MODELS:
        m = build_model(name, a.num_classes, a.width)
        print(f"{name:<10} {count_params(m):>12,} {count_macs(m):>14,}")


def cmd_train_teacher(a) -> None:
    from .config import TeacherConfig
    from .single_run import train_teacher

    train_teacher(TeacherConfig(**_config_kwargs(a), snapshots=a.snapshots), a.out, a.device, a.threads)


def cmd_train_student(a) -> None:
    from .config import StudentConfig
    from .single_run import train_student

    cfg = StudentConfig(**_config_kwargs(a), kd_epochs=a.kd_epochs, alpha=a.alpha, temperature=a.temperature)
    train_student(cfg, a.teacher_snapshot, a.out, a.device, a.threads)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tune-eskd", description="Early-Stopped Knowledge Distillation sweeps on Ray Tune.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list models with parameter counts and MACs")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--width", type=float, default=1.0)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train-teacher", help="train one teacher, saving snapshots at chosen epochs")
    _common_training_flags(p, "resnet18")
    p.add_argument("--snapshots", type=int, nargs="+", default=[3, 6, 9, 10], help="epochs to snapshot")
    p.set_defaults(func=cmd_train_teacher)

    p = sub.add_parser("train-student", help="distill one student from a teacher snapshot (KD, then CE)")
    _common_training_flags(p, "resnet18")
    p.add_argument("--teacher-snapshot", required=True, help="a snapshot .pt written by train-teacher")
    p.add_argument("--kd-epochs", type=int, default=5, help="distill for the first N epochs, then CE only (0: CE baseline)")
    p.add_argument("--alpha", type=float, default=0.9, help="weight of the KD term, in [0, 1]")
    p.add_argument("--temperature", type=float, default=4.0)
    p.set_defaults(func=cmd_train_student)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UsageError as exc:
        print(f"tune-eskd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tune-eskd: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
