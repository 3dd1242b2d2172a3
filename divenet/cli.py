"""The ``divenet`` command: train, evaluate, predict, summary, datasets, generate."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DATASETS = ("fashion-mnist", "mnist")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


# ---- shared pieces -------------------------------------------------------------------------------
def _dataset(name, train, limit=None):
    """The dataset, or its first ``limit`` examples (for quick tries and tests)."""
    from .data import MNIST, ArrayDataset, FashionMNIST

    if name not in DATASETS:
        raise CLIError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    full = (FashionMNIST if name == "fashion-mnist" else MNIST)(train=train)
    if not limit:
        return full
    subset = ArrayDataset(full.images[:limit], full.labels[:limit])
    subset.classes = full.classes
    return subset


def _input_transform(resize):
    from .data.transforms import Resize

    return Resize(resize) if resize and resize != 28 else None


def build_model(meta):
    """Rebuild the model a checkpoint (or a train command) describes, with materialized weights."""
    import divenet as dn
    from .models import get_model

    model = get_model(meta["model"], num_classes=meta["num_classes"], in_channels=meta["in_channels"],
                      **meta.get("model_kwargs", {}))
    if meta.get("kind", "image") == "image":
        side = meta.get("input_size", 28)
        model.init(dn.zeros(1, meta["in_channels"], side, side))
    else:
        model.init(dn.zeros(1, 1, dtype="int64"))
    return model


def _load_model(ckpt, device):
    from .io import load_checkpoint

    meta, state, _ = load_checkpoint(ckpt)
    if "model" not in meta:
        raise CLIError(f"{ckpt}: checkpoint has no model description")
    model = build_model(meta)
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise CLIError(f"{ckpt}: weights do not fit model {meta['model']!r}: {exc}") from None
    return meta, model.to(device).eval()


# ---- commands ------------------------------------------------------------------------------------
def cmd_train(args):
    import divenet as dn
    from .data import DataLoader
    from .models import get_spec
    from .optim import SGD, Adam
    from .train import Trainer

    spec = get_spec(args.model)
    recipe = spec.recipe
    epochs = args.epochs or recipe.epochs
    lr = args.lr if args.lr is not None else recipe.lr
    batch = args.batch_size or recipe.batch_size
    optimizer_name = args.optimizer or recipe.optimizer
    out = Path(args.out or f"runs/{args.model}")
    device = dn.device(args.device)
    if args.threads:
        dn.set_blas_threads(args.threads)
    if args.resume:
        from .io import load_metadata

        _, meta = load_metadata(out)  # the Trainer loads and verifies the weights
        if meta.get("model") != args.model:
            raise CLIError(f"{out}: holds a checkpoint of {meta.get('model')!r}, not {args.model!r}")
        saved = meta["args"]
        lr, batch, optimizer_name, args.seed = saved["lr"], saved["batch_size"], saved["optimizer"], saved["seed"]
        args.resize, args.dataset = saved["resize"], saved["dataset"]
        args.clip_grad, args.limit = saved.get("clip_grad"), saved.get("limit")
        args.text = meta.get("text", args.text)  # a language model resumes on its own text
    dn.manual_seed(args.seed)

    if spec.kind == "text":
        from .models.charlm import text_loaders  # registered by the recurrent zoo

        if not args.text:
            raise CLIError(f"{args.model} trains on a text file: pass --text FILE")
        train_loader, test_loader, extra = text_loaders(args.text, batch, seed=args.seed, device=device,
                                                         limit=args.limit)
        meta = {"model": args.model, "kind": "text", **extra}
        task = "language_model"
    else:
        resize = args.resize or recipe.resize or 28
        args.resize = resize
        train_set = _dataset(args.dataset, True, args.limit)
        test_set = _dataset(args.dataset, False, args.limit)
        tf = _input_transform(resize)
        train_loader = DataLoader(train_set, batch_size=batch, shuffle=True, seed=args.seed,
                                  transform=tf, device=device)
        test_loader = DataLoader(test_set, batch_size=batch, transform=tf, device=device)
        meta = {"model": args.model, "kind": "image", "num_classes": len(train_set.classes),
                "in_channels": 1, "input_size": resize, "dataset": args.dataset,
                "classes": list(train_set.classes)}
        task = "classification"
    model = build_model(meta).to(device)
    params = list(model.parameters())
    if optimizer_name == "sgd":
        optimizer = SGD(params, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    elif optimizer_name == "adam":
        optimizer = Adam(params, lr=lr, weight_decay=recipe.weight_decay)
    else:
        raise CLIError(f"unknown optimizer {optimizer_name!r}; choose sgd or adam")
    meta["args"] = {"lr": lr, "batch_size": batch, "optimizer": optimizer_name, "seed": args.seed,
                    "resize": args.resize, "dataset": args.dataset, "clip_grad": args.clip_grad,
                    "limit": args.limit}
    if not args.resume and (out / "metrics.jsonl").exists():
        raise CLIError(f"{out} already holds a run; pass --resume to continue it or --out to start another")
    print(f"training {args.model} on {meta.get('dataset', args.text)}: {epochs} epochs, batch {batch}, "
          f"{optimizer_name} lr {lr}, {model.num_parameters():,} parameters, device {device}, out {out}",
          flush=True)
    trainer = Trainer(model, optimizer, train_loader, test_loader, epochs=epochs, out_dir=out,
                      clip_grad=args.clip_grad, task=task, metadata=meta, progress=not args.quiet,
                      log=lambda s: print(s, flush=True))
    history = trainer.fit(resume=args.resume)
    if history:
        print(f"done: {out}/metrics.jsonl, checkpoint {out}/epoch-{history[-1]['epoch']:03d}.json")


def cmd_evaluate(args):
    import divenet as dn
    from .data import DataLoader
    from .train import evaluate

    device = dn.device(args.device)
    meta, model = _load_model(args.checkpoint, device)
    if meta.get("kind") != "image":
        raise CLIError("evaluate: only image classifiers are evaluated on a dataset")
    dataset = args.dataset or meta["dataset"]
    tf = _input_transform(meta.get("input_size"))
    loader = DataLoader(_dataset(dataset, False, args.limit), batch_size=args.batch_size, transform=tf,
                        device=device)
    result = evaluate(model, loader)
    print(json.dumps({"checkpoint": str(args.checkpoint), "dataset": dataset, "test_loss": round(result["loss"], 6),
                      "test_acc": round(result["acc"], 6)}))


def _read_image(path, channels, side):
    import numpy as np

    try:
        from PIL import Image
    except ImportError:
        raise CLIError("predict needs Pillow: pip install 'divenet[images]'") from None
    try:
        img = Image.open(path)
        img = img.convert("L" if channels == 1 else "RGB").resize((side, side), Image.BILINEAR)
    except (OSError, ValueError) as exc:
        raise CLIError(f"{path}: not a readable image ({exc})") from None
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def cmd_predict(args):
    import numpy as np

    import divenet as dn
    import divenet.functional as F

    device = dn.device(args.device)
    meta, model = _load_model(args.checkpoint, device)
    side = meta.get("input_size", 28)
    images = np.stack([_read_image(p, meta["in_channels"], side) for p in args.images])
    if args.invert:
        images = 1.0 - images
    with dn.no_grad():
        probs = F.softmax(model(dn.tensor(images, device=device)), dim=1).numpy()
    classes = meta.get("classes") or [str(i) for i in range(probs.shape[1])]
    for path, p in zip(args.images, probs):
        top = np.argsort(-p)[: args.top]
        print(f"{path}: " + ", ".join(f"{classes[i]} {p[i]:.3f}" for i in top))


def cmd_summary(args):
    from .models import get_model
    from .summary import parse_shape, skip_init, summary

    import numpy as np

    from .models import get_spec

    shape = parse_shape(args.input)
    text = get_spec(args.model).kind == "text"  # a language model reads token ids
    with skip_init():  # the summary needs shapes, not random weights: VGG-19 builds in ms
        model = get_model(args.model, num_classes=args.num_classes, in_channels=1 if text else shape[0])
    print(summary(model, shape, name=args.model, dtype=np.int64 if text else np.float32))


def cmd_datasets(args):
    from .data.datasets import describe_datasets

    print(describe_datasets())


def cmd_generate(args):
    import divenet as dn
    from .models.charlm import generate

    meta, model = _load_model(args.checkpoint, dn.device(args.device))
    dn.manual_seed(args.seed)
    print(generate(model, meta, args.prefix, args.length, temperature=args.temperature))


# ---- parsing -------------------------------------------------------------------------------------
def make_parser():
    p = argparse.ArgumentParser(prog="divenet", description="Train and use the classic convnets and RNNs.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a zoo model (D2L's recipe unless overridden)")
    t.add_argument("model")
    t.add_argument("--dataset", default="fashion-mnist", choices=DATASETS)
    t.add_argument("--text", help="UTF-8 text file for a language model (charlm)")
    t.add_argument("--epochs", type=int, help="total epochs (with --resume too)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--optimizer", choices=("sgd", "adam"))
    t.add_argument("--resize", type=int, help="input side length (D2L: 224 for AlexNet/VGG, 96 ...)")
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=int,
                   help="BLAS threads (default: all cores; 1 is faster while other jobs compete for the cores)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--clip-grad", type=float, help="clip the gradient norm to this value")
    t.add_argument("--out", help="run directory (default runs/MODEL)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--limit", type=int, help="use only the first N training and N test examples "
                   "(charlm: the first N characters of the text)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="test accuracy of a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--dataset", choices=DATASETS)
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--limit", type=int, help="use only the first N test examples")
    e.add_argument("--device", default="cpu")
    e.set_defaults(fn=cmd_evaluate)

    pr = sub.add_parser("predict", help="classify image files (PNG/JPEG)")
    pr.add_argument("checkpoint")
    pr.add_argument("images", nargs="+")
    pr.add_argument("--top", type=int, default=3)
    pr.add_argument("--invert", action="store_true", help="invert (dark object on light ground)")
    pr.add_argument("--device", default="cpu")
    pr.set_defaults(fn=cmd_predict)

    s = sub.add_parser("summary", help="layer shapes, parameters and MACs")
    s.add_argument("model")
    s.add_argument("--input", default="1x28x28", help="CxHxW, e.g. 3x224x224")
    s.add_argument("--num-classes", type=int, default=10)
    s.set_defaults(fn=cmd_summary)

    d = sub.add_parser("datasets", help="where each data set was found")
    d.set_defaults(fn=cmd_datasets)

    g = sub.add_parser("generate", help="sample text from a charlm checkpoint")
    g.add_argument("checkpoint")
    g.add_argument("--prefix", default="")
    g.add_argument("--length", type=int, default=200)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu")
    g.set_defaults(fn=cmd_generate)
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    from .data.datasets import DatasetNotFoundError
    from .data.idx import IDXError
    from .io.checkpoint import CheckpointError
    from .train import TrainingDiverged

    try:
        args.fn(args)
    except (CLIError, DatasetNotFoundError, IDXError, CheckpointError, TrainingDiverged,
            ValueError, RuntimeError) as exc:  # user errors: one clear line, no traceback
        print(f"divenet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"divenet {args.command}: interrupted; the last complete checkpoint is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
