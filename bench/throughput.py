"""Training and inference throughput (images/s) of every model in tune_eskd.models.MODELS.

Training: forward + backward + SGD step on augmented, normalized batches from engine.Images.views, the loop
engine.Trainer runs, in the precision it picks (tune_eskd.gpu: bf16 autocast where native, fp16 with a GradScaler
on compute capability 7.x; channels_last on CUDA; cudnn.benchmark on). Inference: the forward pass of a teacher
in eval mode without grad, on the same kind of batches (what a live teacher costs a KD step), in
--infer-precision (float32, the default teacher pass, or bf16 with channels_last: --soft-label-precision bf16).

Each measurement runs warm-up batches, then timed batches until --batches are done or --seconds have passed
(at least one), so big models on a CPU take a few batches only. Usage:

    python bench/throughput.py                      # every model, on CUDA when available, else CPU
    python bench/throughput.py --device cpu --models resnet8,resnet18 --batches 5
    python bench/throughput.py --infer-precision bf16   # a bf16 teacher pass (CPUs with AMX, GPUs >= sm80)
"""
import argparse
import time

import torch
import torch.nn.functional as F

import common  # noqa: F401  (puts the checkout on sys.path)
from common import Run, publish, table
from tune_eskd.data import load_splits
from tune_eskd import gpu
from tune_eskd.engine import Images, live_teacher, pick_device, set_threads
from tune_eskd.models import MODELS, build_model, count_macs, count_params


def batches(images: Images, batch_size: int):
    """Endless full batches of augmented views, epoch after epoch."""
    epoch = 0
    while True:
        epoch += 1
        for idx, x in images.views(0, "student", epoch, batch_size):
            if len(idx) == batch_size:
                yield idx, x


def timed(step, source, device, warmup: int, max_batches: int, budget_s: float) -> tuple[float, int]:
    """(images/s, timed batches) of `step` over batches from `source`."""
    for _ in range(warmup):
        step(*next(source))
    gpu.synchronize(device)
    done, images, start = 0, 0, time.perf_counter()
    while done < max_batches and (done == 0 or time.perf_counter() - start < budget_s):
        idx, x = next(source)
        step(idx, x)
        done, images = done + 1, images + len(idx)
        if device.type == "cuda" and done % 5 == 0:
            gpu.synchronize(device)  # keep the queue short, so the budget check sees real time
    gpu.synchronize(device)
    return images / (time.perf_counter() - start), done


def measure(name: str, images: Images, num_classes: int, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = build_model(name, num_classes)
    params, macs = count_params(model), count_macs(model)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    precision = gpu.training_precision(device.type, gpu.capability(device))
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def train_step(idx, x):
        with gpu.autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), images.y[idx])
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    warmup = 3 if device.type == "cuda" else 1
    model.train()
    train_ips, train_n = timed(train_step, batches(images, args.batch_size), device, warmup, args.batches, args.seconds)
    teacher = live_teacher(model, gpu.teacher_precision(args.infer_precision, device.type, gpu.capability(device)))
    infer_ips, infer_n = timed(lambda idx, x: teacher(0, idx, x), batches(images, args.infer_batch_size), device, warmup, args.batches,
                               args.seconds)
    return {"model": name, "params_m": params / 1e6, "macs_m": macs / 1e6, "train": train_ips, "train_n": train_n,
            "infer": infer_ips, "infer_n": infer_n}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: all)")
    p.add_argument("--batches", type=int, default=20, help="at most this many timed batches a measurement")
    p.add_argument("--seconds", type=float, default=8.0, help="stop timing a measurement after this long")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    p.add_argument("--infer-batch-size", type=int, default=128,
                   help="inference batch size (default 128: a live teacher runs on the student's batch)")
    p.add_argument("--infer-precision", choices=gpu.TEACHER_PRECISIONS, default="float32",
                   help="teacher-pass precision of the inference column (default float32)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-record", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = p.parse_args(argv)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        p.error(f"unknown models {unknown}: choose from {', '.join(MODELS)}")
    device = pick_device(args.device)
    set_threads(args.threads)
    gpu.configure_backends(deterministic=False)  # cudnn.benchmark, as trials run
    run = Run(device)
    data = load_splits("synthetic", val_split=0.0)
    need = max(args.batch_size, args.infer_batch_size)
    if len(data.train_y) < need:
        p.error(f"batch size {need} exceeds the {len(data.train_y)} images of the synthetic set")
    images = Images(data.train_x, data.train_y, data.mean, data.std, device)
    rows, t0 = [], time.perf_counter()
    for name in names:
        r = measure(name, images, data.num_classes, args, device)
        print(f"{name:>9}: train {r['train']:9.1f} img/s ({r['train_n']} batches), "
              f"inference {r['infer']:9.1f} img/s ({r['infer_n']} batches)", flush=True)
        rows.append([r["model"], f"{r['params_m']:.2f}", f"{r['macs_m']:.0f}", f"{r['train']:.1f}", r["train_n"],
                     f"{r['infer']:.1f}", r["infer_n"]])
    train_precision = gpu.training_precision(device.type, gpu.capability(device))
    infer = gpu.teacher_precision(args.infer_precision, device.type, gpu.capability(device))
    layout = "channels_last" if device.type == "cuda" else "channels_last for bf16 inference"
    precision = f"training in {train_precision}, inference in {infer}, {layout}"
    body = (f"Device `{device}` ({precision}); synthetic 32x32 images; training batch {args.batch_size}, "
            f"inference batch {args.infer_batch_size}; whole run {time.perf_counter() - t0:.0f} s.\n\n"
            + table(["model", "params (M)", "MACs/image (M)", "train img/s", "timed batches",
                     "inference img/s", "timed batches"], rows))
    block = run.block(f"{device.type.upper()} throughput", body)
    publish("throughput", block, not args.no_record)


if __name__ == "__main__":
    main()
