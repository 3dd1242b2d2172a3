"""The ``divenet`` command: train, evaluate, predict, summary, profile, graph, datasets, generate.

Every option is checked while parsing (the ``type=`` functions below) or right after it
(:func:`check_args`), before any data or weights load; a bad value is one line on stderr,
``divenet CMD: error: argument --opt: ...``, and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

DATASETS = ("fashion-mnist", "mnist")
# train options a run saves and ``--resume`` keeps (an explicit different value is refused)
RESUMED = ("lr", "batch_size", "optimizer", "seed", "resize", "dataset", "clip_grad", "limit")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2, no traceback."""


# ---- argument checks -----------------------------------------------------------------------------
def _shown(text):
    return text if text and text.strip() == text else repr(text)


def _number(text, kind, ok, what):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {_shown(text)}")
    return value


def positive_int(text):
    return _number(text, int, lambda v: v > 0, "a positive integer")


MAX_SIDE = 4096  # an image side beyond this is a typo, not a model input (224 is D2L's largest)


def image_side(text):
    return _number(text, int, lambda v: 0 < v <= MAX_SIDE, f"an image side from 1 to {MAX_SIDE}")


def nonnegative_int(text):
    return _number(text, int, lambda v: v >= 0, "a non-negative integer")


def positive_float(text):
    return _number(text, float, lambda v: math.isfinite(v) and v > 0, "a positive finite number")


def nonnegative_float(text):
    return _number(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def recompute_spec(text):
    """``--recompute``: "sqrt" (about sqrt(n) segments) or a number of segments (dn.compile's)."""
    if text == "sqrt":
        return text
    return _number(text, int, lambda v: v > 0, '"sqrt" or a positive number of segments')


_SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_size(text):
    """Bytes, or with a K, M, G or T suffix: powers of 1024 (``512M``, ``2G``, ``1.5GiB``)."""
    t = text.strip().upper()
    for suffix in ("IB", "B"):
        if t.endswith(suffix) and len(t) > len(suffix):
            t = t[:-len(suffix)]
            break
    scale = _SIZE_UNITS.get(t[-1:]) if t[-1:].isalpha() else 1
    try:
        value = float(t[:-1] if scale != 1 else t) if scale else None
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of bytes >= 0, optionally with a K, M, G or T "
                                         f"suffix (powers of 1024), got {_shown(text)}")
    return int(value * scale)


def _path(text):
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must be a path, got {text!r}")  # Path('') would be '.'
    return Path(text)


def nonempty(text):
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must not be empty, got {text!r}")
    return text


def _exists(path, text):
    try:
        return path.exists()
    except OSError as exc:  # e.g. a name too long for the file system
        raise argparse.ArgumentTypeError(f"{_shown(text)}: {exc.strerror or exc}") from None


def existing_file(text):
    path = _path(text)
    if not _exists(path, text):
        raise argparse.ArgumentTypeError(f"{_shown(text)}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{_shown(text)}: not a file")
    return path


def existing_path(text):
    """A checkpoint: an ``epoch-NNN.json`` (or its weights file) or a run directory."""
    path = _path(text)
    if not _exists(path, text) and not (path.suffix == ".safetensors" and path.with_suffix(".json").exists()):
        raise argparse.ArgumentTypeError(f"{_shown(text)}: no such file or directory")
    return path


def output_dir(text):
    """A run directory: an existing directory, or a path that can be created (no file on the way)."""
    path = _path(text)
    for part in (path, *path.parents):
        if _exists(part, text):
            if not part.is_dir():
                where = "is a file" if part == path else f"lies under the file {part}"
                raise argparse.ArgumentTypeError(f"{text} {where}; the run directory must be a directory")
            if not os.access(part, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"{text}: {part} is not writable")
            break
    return path


def _output_file(text, suffix):
    """A file to write: a name ending in ``suffix`` in an existing, writable directory."""
    path = _path(text)
    if path.suffix.lower() != suffix:
        raise argparse.ArgumentTypeError(f"{_shown(text)}: must be a {suffix} file name")
    parent = path.parent
    if not _exists(parent, text) or not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{_shown(text)}: no such directory {str(parent)!r}")
    if _exists(path, text) and path.is_dir():
        raise argparse.ArgumentTypeError(f"{_shown(text)}: is a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{_shown(text)}: {parent} is not writable")
    return path


def output_png(text):
    return _output_file(text, ".png")


def output_json(text):
    return _output_file(text, ".json")


def _output_one_of(text, suffixes):
    suffix = _path(text).suffix.lower()
    if suffix not in suffixes:
        raise argparse.ArgumentTypeError(f"{_shown(text)}: must be a {', '.join(suffixes[:-1])} or "
                                         f"{suffixes[-1]} file name")
    return _output_file(text, suffix)


def output_graph(text):
    return _output_one_of(text, (".dot", ".svg", ".png"))


def output_picture(text):
    return _output_one_of(text, (".svg", ".png"))


def device_spec(text):
    from .backend import device

    try:
        return device(text)
    except (ValueError, RuntimeError) as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("device: ")) from None


def model_name(text):
    from .models import get_spec

    try:
        return get_spec(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def input_shape(text):
    from .summary import parse_shape

    try:
        shape = parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("summary: ")) from None
    if max(shape) > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"sizes must be at most {MAX_SIDE}, got {text!r}")
    return shape


def model_or_checkpoint(text):
    """``divenet export``'s source: a checkpoint (run directory, epoch-NNN.json) or a zoo model name."""
    try:
        return existing_path(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        return model_name(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{_shown(text)}: neither a checkpoint (no such file or "
                                         "directory) nor a zoo model name (see divenet models)") from None


def output_onnx(text):
    return _output_file(text, ".onnx")


def opset_number(text):
    return _number(text, int, lambda v: v >= 13, "an ONNX opset number of at least 13")


def port_number(text):
    return _number(text, int, lambda v: 0 <= v <= 65535, "a port number from 0 to 65535 (0: any free port)")


def host_address(text):
    if not text or any(ch.isspace() for ch in text):
        raise argparse.ArgumentTypeError(f"must be a host name or address, e.g. 127.0.0.1 or 0.0.0.0, got {text!r}")
    return text


def url_name(text):
    """A name that is one URL path segment (``divenet serve --name``)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text):
        raise argparse.ArgumentTypeError(f"must be letters, digits, '_', '.' and '-' (one URL path "
                                         f"segment), got {_shown(text)}")
    return text


def check_args(args):
    """Checks that need several options together (the single values were checked by their type)."""
    if args.command == "train":
        from .models import get_spec

        text = get_spec(args.model).kind == "text"
        if text:
            for opt in ("dataset", "resize"):
                if getattr(args, opt) is not None:
                    raise CLIError(f"argument --{opt}: {args.model} is a language model trained on "
                                   "--text FILE, not on an image data set")
            if args.text is None and not args.resume:
                raise CLIError(f"{args.model} trains on a text file: pass --text FILE")
        elif args.text is not None:
            raise CLIError(f"argument --text: {args.model} is an image model; --text is for charlm")
        if text and args.distributed:
            raise CLIError(f"argument --distributed: trains image models; {args.model}'s text loader "
                           "has no distributed sampler")
        if args.out is None:
            try:
                args.out = output_dir(f"runs/{args.model}")
            except argparse.ArgumentTypeError as exc:
                raise CLIError(f"argument --out: {exc}") from None


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


def _check_description(meta, ckpt):
    """The model description of a checkpoint's metadata, checked before a model is built from it."""
    from .models import get_spec

    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    def bad(field, want):
        raise CLIError(f"{ckpt}: the model description's {field!r} must be {want}, got {meta.get(field)!r}")

    if "model" not in meta:
        raise CLIError(f"{ckpt}: checkpoint has no model description")
    if not isinstance(meta["model"], str):
        bad("model", "a model name")
    try:
        get_spec(meta["model"])
    except ValueError as exc:
        raise CLIError(f"{ckpt}: {exc}") from None
    for field in ("num_classes", "in_channels"):
        if not count(meta.get(field)):
            bad(field, "a positive integer")
    if meta.get("kind", "image") not in ("image", "text"):
        bad("kind", "'image' or 'text'")
    if meta.get("kind", "image") == "image" and not count(meta.get("input_size", 28)):
        bad("input_size", "a positive integer")
    if not isinstance(meta.get("model_kwargs", {}), dict):
        bad("model_kwargs", "an object")
    classes = meta.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) != meta["num_classes"]
                                or not all(isinstance(c, str) for c in classes)):
        bad("classes", f"a list of {meta['num_classes']} names")


def _load_model(ckpt, device, allow_nonfinite=False):
    from .io.checkpoint import check_finite, load_checkpoint

    meta, state, _ = load_checkpoint(ckpt)
    if not allow_nonfinite:
        check_finite(state, ckpt)  # NaN weights would predict garbage without a word
    _check_description(meta, ckpt)
    try:
        model = build_model(meta)
    except TypeError as exc:  # model_kwargs the builder does not take
        raise CLIError(f"{ckpt}: cannot rebuild model {meta['model']!r} from its description: {exc}") from None
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise CLIError(f"{ckpt}: weights do not fit model {meta['model']!r}: {exc}") from None
    return meta, model.to(device).eval()


# ---- commands ------------------------------------------------------------------------------------
def _resume_settings(args, out, checkpoint):
    """Take the saved settings of the run in ``out`` (newest ``checkpoint``) into ``args``; refuse
    an option given on the command line that differs from them. Returns the epochs done."""
    from .io import load_metadata

    _, meta = load_metadata(checkpoint)  # the Trainer loads and verifies the weights
    if meta.get("model") != args.model:
        raise CLIError(f"{out}: holds a checkpoint of {meta.get('model')!r}, not {args.model!r}")
    if not isinstance(meta.get("args"), dict):
        raise CLIError(f"{checkpoint}: not written by divenet train (no saved settings to resume with)")
    saved = dict(meta["args"])
    if meta.get("text") is not None:
        saved["text"] = meta["text"]
        if args.text is not None and Path(args.text).resolve() == Path(meta["text"]).resolve():
            args.text = meta["text"]  # the same file, spelled another way
    conflicts = [f"--{key.replace('_', '-')} {getattr(args, key)} "
                 + (f"(the run has {saved[key]})" if saved.get(key) is not None else "(the run has none)")
                 for key in (*RESUMED, "text")
                 if getattr(args, key) is not None and getattr(args, key) != saved.get(key)]
    if conflicts:
        raise CLIError(f"{out}: --resume continues the run with its saved settings, but "
                       f"{'; '.join(conflicts)}; leave them out, or pass another --out to start a new run")
    for key in (*RESUMED, "text"):
        setattr(args, key, saved.get(key))
    return int(meta["epoch"])


def cmd_train(args):
    if args.distributed:  # every rank of mpirun runs this; an error on one stops them all
        from .distributed.launch import abort_on_error, setup

        comm, args.device = setup(args.device, args.threads)
        with abort_on_error(comm, "train", (CLIError, ValueError, RuntimeError, OSError)):
            return _train(args, comm)
    return _train(args, None)


def _silent(*args, **kwargs):
    pass


def _train(args, comm):
    """``divenet train``; with ``comm`` (``--distributed``) this rank's part of a data-parallel
    run: rank 0 alone prints, evaluates and writes (divenet/distributed/launch.py)."""
    import divenet as dn
    from .data import DataLoader
    from .models import get_spec
    from .optim import SGD, Adam
    from .train import Trainer, run_state

    say = print if comm is None or comm.rank == 0 else _silent

    spec = get_spec(args.model)
    recipe = spec.recipe
    out = args.out
    # fresh: no complete checkpoint, so a start (or a --resume, which the Trainer says) begins at
    # epoch 1 and clears what an interrupted start left; otherwise the directory holds a run
    state = run_state(out)
    if state.state != "fresh" and not args.resume:
        raise CLIError(f"{out} already holds a run; pass --resume to continue it or --out to start another")
    done = _resume_settings(args, out, state.checkpoint) if state.state != "fresh" else 0
    epochs = args.epochs or state.epochs or recipe.epochs
    if done:
        if epochs < done:
            raise CLIError(f"argument --epochs: {out} has already trained {done} epochs and --epochs is "
                           f"the total to reach, so it must be at least {done}, got {epochs}")
        if epochs == done:
            say(f"{out} has already trained {epochs} epochs; nothing to do (pass a larger --epochs to "
                  "train on)")
            return 0
    try:  # now, not after the first epoch: a run directory that cannot be made fails at once
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"argument --out: cannot create {out}: {exc.strerror or exc}") from None
    lr = args.lr if args.lr is not None else recipe.lr
    batch = args.batch_size or recipe.batch_size
    if comm is not None:  # --batch-size is the global batch; each rank loads its share
        from .distributed import launch
        from .distributed.ddp import DistributedDataParallel

        rank_batch = launch.check_batch(batch, comm)
    optimizer_name = args.optimizer or recipe.optimizer
    seed = args.seed if args.seed is not None else 0
    device = args.device
    if args.threads:
        dn.set_blas_threads(args.threads)
    dn.manual_seed(seed)

    if spec.kind == "text":
        from .models.charlm import text_loaders  # registered by the recurrent zoo

        train_loader, test_loader, extra = text_loaders(args.text, batch, seed=seed, device=device,
                                                        limit=args.limit)
        meta = {"model": args.model, "kind": "text", **extra}
        task = "language_model"
    else:
        args.resize = args.resize or recipe.resize or 28
        args.dataset = args.dataset or DATASETS[0]
        train_set = _dataset(args.dataset, True, args.limit)
        test_set = _dataset(args.dataset, False, args.limit)
        tf = _input_transform(args.resize)
        order = {"shuffle": True} if comm is None else launch.train_order(train_set, comm, seed)
        train_loader = DataLoader(train_set, batch_size=batch if comm is None else rank_batch, seed=seed,
                                  transform=tf, device=device, **order)
        test_loader = DataLoader(test_set, batch_size=batch, transform=tf, device=device)
        meta = {"model": args.model, "kind": "image", "num_classes": len(train_set.classes),
                "in_channels": 1, "input_size": args.resize, "dataset": args.dataset,
                "classes": list(train_set.classes)}
        task = "classification"
    model = build_model(meta).to(device)
    params = list(model.parameters())
    if optimizer_name == "sgd":
        optimizer = SGD(params, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    else:
        optimizer = Adam(params, lr=lr, weight_decay=recipe.weight_decay)
    meta["args"] = {"lr": lr, "batch_size": batch, "optimizer": optimizer_name, "seed": seed,
                    "resize": args.resize, "dataset": args.dataset, "clip_grad": args.clip_grad,
                    "limit": args.limit}
    compiled = None  # dn.compile options; --recompute and --memory-budget imply --compile
    if args.compile or args.recompute is not None or args.memory_budget is not None:
        compiled = {"recompute": args.recompute, "memory_budget": args.memory_budget}
    say(f"training {args.model} on {meta.get('dataset', args.text)}: {epochs} epochs, batch {batch}, "
          f"{optimizer_name} lr {lr}, {model.num_parameters():,} parameters, device {device}, out {out}"
          + (", compiled" if compiled is not None else ""), flush=True)
    trainer = Trainer(model if comm is None else DistributedDataParallel(model, comm), optimizer,
                      train_loader, test_loader, epochs=epochs, out_dir=out, comm=comm,
                      clip_grad=args.clip_grad, task=task, metadata=meta, progress=not args.quiet,
                      log=lambda s: print(s, flush=True), keep=args.keep, keep_best=args.keep_best,
                      divergence_check=not args.no_divergence_check, tensorboard=args.tensorboard,
                      compile=compiled)
    history = trainer.fit(resume=args.resume)
    if history:
        say(f"done: {out}/metrics.jsonl, checkpoint {out}/epoch-{history[-1]['epoch']:03d}.json")
    return 0


def cmd_evaluate(args):
    from .data import DataLoader
    from .train import evaluate

    meta, model = _load_model(args.checkpoint, args.device, args.allow_nonfinite)
    if meta.get("kind") != "image":
        raise CLIError("evaluate: only image classifiers are evaluated on a dataset")
    dataset = args.dataset or meta["dataset"]
    tf = _input_transform(meta.get("input_size"))
    loader = DataLoader(_dataset(dataset, False, args.limit), batch_size=args.batch_size, transform=tf,
                        device=args.device)
    result = evaluate(model, loader)
    print(json.dumps({"checkpoint": str(args.checkpoint), "dataset": dataset, "test_loss": round(result["loss"], 6),
                      "test_acc": round(result["acc"], 6)}))
    return 0


def _read_image(path, channels, side):
    """The image at ``path`` as divenet.data.images.read_image gives it (shared with the server's
    /v1/predict); an unreadable or too large file is a CLIError."""
    from .data.images import ImageError, read_image

    try:
        return read_image(path, channels, side)
    except ImageError as exc:
        raise CLIError(str(exc)) from None


def cmd_predict(args):
    """Classify each readable image; a file that cannot be read is reported and skipped, and the
    exit status is 1 when any was."""
    import numpy as np

    import divenet as dn
    import divenet.functional as F

    if args.checkpoint.suffix.lower() == ".onnx":  # an ONNX file: classes etc. from its metadata
        meta, model = _onnx_model(args.checkpoint, args.device)
    else:
        meta, model = _load_model(args.checkpoint, args.device, args.allow_nonfinite)
    if meta.get("kind", "image") != "image":
        raise CLIError(f"predict: {meta['model']} is not an image classifier")
    side = meta.get("input_size", 28)
    paths, images = [], []
    for path in args.images:
        try:
            image, note = _read_image(path, meta["in_channels"], side)
        except CLIError as exc:
            print(f"divenet predict: error: {exc}", file=sys.stderr)
            continue
        if note:
            print(f"divenet predict: {path}: {note}", file=sys.stderr)
        paths.append(path)
        images.append(image)
    if images:
        batch = np.stack(images)
        if args.invert or meta.get("invert"):
            batch = 1.0 - batch
        if meta.get("mean") is not None:  # the normalization a model's metadata names
            shape = (-1, 1, 1)
            batch = (batch - np.reshape(meta["mean"], shape)) / np.reshape(meta["std"], shape)
            batch = batch.astype(np.float32)
        with dn.no_grad():
            probs = F.softmax(model(dn.tensor(batch, device=args.device)), dim=1).numpy()
        classes = meta.get("classes") or [str(i) for i in range(probs.shape[1])]
        for path, p in zip(paths, probs):
            top = np.argsort(-p)[: args.top]
            print(f"{path}: " + ", ".join(f"{classes[i]} {p[i]:.3f}" for i in top))
    return 0 if len(paths) == len(args.images) else 1


def _onnx_model(path, device):
    """(metadata, module) of an ONNX file for predict (divenet/onnx/load.py)."""
    try:
        from .onnx.load import load, predict_metadata
        model = load(path)
    except ImportError as exc:
        raise CLIError(f"an ONNX file needs {exc.name}: pip install 'divenet[onnx]'") from None
    return predict_metadata(model), model.to(device)


def cmd_export(args):
    """A zoo model (untrained weights, at the input size it trains at) or a checkpoint (its
    weights; classes and preprocessing into the file's metadata) as an ONNX file (docs/onnx.md)."""
    from .models import get_spec

    if isinstance(args.source, Path):
        meta, model = _load_model(args.source, "cpu", args.allow_nonfinite)
        spec = get_spec(meta["model"])
        shape = summary_shape(spec, args.input or ((meta.get("seq_len"),) if spec.kind == "text" else
                                                   (meta["in_channels"], meta.get("input_size", 28),
                                                    meta.get("input_size", 28))))
        if spec.kind == "image" and shape[0] != meta["in_channels"]:
            raise CLIError(f"argument --input: {args.source} takes {meta['in_channels']}-channel images, "
                           f"got {'x'.join(map(str, shape))}")
    else:
        spec = get_spec(args.source)
        shape = summary_shape(spec, args.input)
        meta = {"model": spec.name, "kind": spec.kind, "num_classes": 10,
                "in_channels": 1 if spec.kind == "text" else shape[0], "input_size": shape[-1]}
        model = build_model(meta)
    try:
        from .onnx.export import export_command
        print(export_command(model, meta, args.onnx, shape, args.opset))
    except ImportError as exc:
        raise CLIError(f"export needs {exc.name}: pip install 'divenet[onnx]'") from None
    return 0


def summary_shape(spec, shape):
    """The input ``divenet summary`` passes for the model ``spec``: a language model reads a
    sequence of token ids (its length; default the length it trains on); an image model reads
    C x H x W, where ``S`` means 1 x S x S and ``HxW`` 1 x H x W (default: the side ``divenet
    train`` uses, D2L's resize or Fashion-MNIST's 28)."""
    if spec.kind == "text":
        from .models.charlm import SEQ_LEN

        shape = shape or (SEQ_LEN,)
        if len(shape) != 1:
            raise CLIError(f"argument --input: {spec.name} reads a sequence of token ids; give its "
                           f"length, e.g. 64, got {'x'.join(map(str, shape))}")
        return shape
    if shape is None:
        side = spec.recipe.resize or 28
        return (1, side, side)
    if len(shape) > 3:
        raise CLIError(f"argument --input: give S, HxW or CxHxW without the batch axis (e.g. 224, "
                       f"96x96 or 3x224x224), got {'x'.join(map(str, shape))}")
    if len(shape) == 1:
        return (1, shape[0], shape[0])
    return (1, *shape) if len(shape) == 2 else shape


def _model_summary(name, shape=None, num_classes=10):
    """``summary`` of zoo model ``name`` on ``shape`` (default: the size it trains at)."""
    import numpy as np

    from .models import get_model, get_spec
    from .summary import skip_init, summary

    spec = get_spec(name)
    shape = summary_shape(spec, shape)
    text = spec.kind == "text"  # a language model reads token ids
    with skip_init():  # the summary needs shapes, not random weights: VGG-19 builds in ms
        model = get_model(name, num_classes=num_classes, in_channels=1 if text else shape[0])
    return summary(model, shape, name=name, dtype=np.int64 if text else np.float32)


def cmd_summary(args):
    print(_model_summary(args.model, args.input, args.num_classes))
    return 0


def _clip(text, n):
    return text if len(text) <= n else text[:n - 3].rstrip() + "..."


def cmd_models(args):
    """Every zoo model: parameters and MACs at its training size (as ``divenet summary``),
    D2L's recipe and what it is."""
    from .models import get_spec, list_models

    rows = []
    for name in list_models():
        spec, s = get_spec(name), _model_summary(name)
        r = spec.recipe
        rows.append({"name": name, "kind": spec.kind, "input": list(s.input_shape), "params": s.total_params,
                     "macs": s.total_macs, "epochs": r.epochs, "lr": r.lr, "batch_size": r.batch_size,
                     "optimizer": r.optimizer, "resize": r.resize, "description": spec.description})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from .summary import _si

    head = ("model", "input", "params", "MACs", "epochs", "lr", "batch", "optim", "description")
    body = [(r["name"], "x".join(map(str, r["input"])), _si(r["params"]), _si(r["macs"]), str(r["epochs"]),
             f"{r['lr']:g}", str(r["batch_size"]), r["optimizer"], _clip(r["description"], 72)) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    for cells in (head, *body):
        print("  ".join(f"{c:<{w}}" for c, w in zip(cells, widths)).rstrip())
    return 0


def cmd_profile(args):
    """Per-op times, MACs, GFLOP/s and bytes live of a zoo model (divenet/profiler.py)."""
    from .models import get_spec
    from .profiler import command

    return command(args, summary_shape(get_spec(args.model), args.input))


def cmd_graph(args):
    """The traced graph with its memory plan, and the memory timeline (divenet/graphviz.py)."""
    from .graphviz import command
    from .models import get_spec

    return command(args, summary_shape(get_spec(args.model), args.input))


def cmd_show(args):
    from .show import run

    return run(args)


def cmd_datasets(args):
    from .data.datasets import describe_datasets

    print(describe_datasets())
    return 0


def cmd_generate(args):
    import divenet as dn
    from .models.charlm import generate

    meta, model = _load_model(args.checkpoint, args.device, args.allow_nonfinite)
    if meta.get("kind") != "text":
        raise CLIError(f"generate: {meta.get('model')} is not a language model (charlm)")
    dn.manual_seed(args.seed)
    print(generate(model, meta, args.prefix, args.length, temperature=args.temperature))
    return 0


def cmd_serve(args):
    """Serve a checkpoint or an ONNX file over HTTP (divenet/serve, docs/serving.md)."""
    try:
        from .serve import open_engine
        from .serve.app import run
    except ImportError as exc:
        raise CLIError(f"serve needs {exc.name}: pip install 'divenet[serve]'") from None
    engine = open_engine(args.model_file, args.engine, args.device,
                         load_checkpoint=lambda p: _load_model(p, args.device, args.allow_nonfinite))
    return run(engine, host=args.host, port=args.port, name=args.name, max_batch=args.max_batch,
               max_delay_ms=args.max_delay_ms, max_queue=args.max_queue, timeout_s=args.timeout_s,
               max_body_bytes=max(1, int(args.max_body_mb * (1 << 20))), max_pixels=args.max_pixels)


# ---- parsing -------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line, ``divenet CMD: error: ...``, as every other error of the command (argparse
        would print the usage first)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def make_parser():
    from . import __version__

    p = _Parser(prog="divenet", description="Train and use the classic convnets and RNNs.")
    p.add_argument("--version", action="version", version=f"divenet {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def device_option(parser):
        parser.add_argument("--device", type=device_spec, default="cpu", help="cpu, gpu or gpu:N")

    def traced_model_options(parser, batch):
        """MODEL, --input and --batch of the commands that run a zoo model on made-up input."""
        parser.add_argument("model", type=model_name)
        parser.add_argument("--input", type=input_shape,
                            help="S, HxW or CxHxW without the batch axis (default: the size the model trains at)")
        parser.add_argument("--batch", type=positive_int, default=batch, help=f"default {batch}")

    def checkpoint_options(parser):
        parser.add_argument("checkpoint", type=existing_path, help="a run directory or an epoch-NNN.json")
        parser.add_argument("--allow-nonfinite", action="store_true",
                            help="load weights that hold NaN or infinity (refused by default)")
        device_option(parser)

    # defaults of None tell an option given on the command line from one left out (--resume)
    t = sub.add_parser("train", help="train a zoo model (D2L's recipe unless overridden)")
    t.add_argument("model", type=model_name)
    t.add_argument("--dataset", choices=DATASETS, help="default fashion-mnist")
    t.add_argument("--text", type=existing_file, help="UTF-8 text file for a language model (charlm)")
    t.add_argument("--epochs", type=positive_int, help="total epochs (with --resume too)")
    t.add_argument("--batch-size", type=positive_int)
    t.add_argument("--lr", type=positive_float)
    t.add_argument("--optimizer", choices=("sgd", "adam"))
    t.add_argument("--resize", type=image_side, help="input side length (D2L: 224 for AlexNet/VGG, 96 ...)")
    device_option(t)
    t.add_argument("--threads", type=positive_int,
                   help="BLAS threads (default: all cores; 1 is faster while other jobs compete for the cores)")
    t.add_argument("--seed", type=nonnegative_int, help="default 0")
    t.add_argument("--clip-grad", type=positive_float, help="clip the gradient norm to this value")
    t.add_argument("--out", type=output_dir, help="run directory (default runs/MODEL)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--limit", type=positive_int, help="use only the first N training and N test examples "
                   "(charlm: the first N characters of the text)")
    t.add_argument("--keep", type=nonnegative_int, default=2,
                   help="checkpoints to keep, the newest (default 2; 0 keeps every one)")
    t.add_argument("--keep-best", action="store_true",
                   help="also keep the checkpoint of the best test accuracy (DIR/best.json names it)")
    t.add_argument("--no-divergence-check", action="store_true",
                   help="do not stop when the loss grows far above the first step's (a NaN or inf loss "
                   "always stops)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--distributed", action="store_true",
                   help="data parallel over the ranks of mpirun (mpirun -np N divenet train ... "
                   "--distributed); --batch-size is then the global batch (docs/distributed.md)")
    t.add_argument("--tensorboard", action="store_true",
                   help="write TensorBoard event files to OUT/tensorboard (pip install 'divenet[tensorboard]')")
    t.add_argument("--compile", action="store_true",
                   help="train through dn.compile(model): the same numbers, replayed as one graph "
                   "(docs/compile.md); a run may resume with or without it")
    t.add_argument("--recompute", type=recompute_spec, metavar="sqrt|N",
                   help="recompute N segments (sqrt: about sqrt(ops)) in backward instead of storing "
                   "them (implies --compile)")
    t.add_argument("--memory-budget", type=byte_size, metavar="BYTES",
                   help="recompute segments only until a step keeps at most BYTES (512M, 2G; implies "
                   "--compile)")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("evaluate", help="test accuracy of a checkpoint")
    checkpoint_options(e)
    e.add_argument("--dataset", choices=DATASETS)
    e.add_argument("--batch-size", type=positive_int, default=256)
    e.add_argument("--limit", type=positive_int, help="use only the first N test examples")
    e.set_defaults(fn=cmd_evaluate)

    pr = sub.add_parser("predict", help="classify image files (PNG/JPEG)")
    checkpoint_options(pr)
    pr.add_argument("images", nargs="+")
    pr.add_argument("--top", type=positive_int, default=3)
    pr.add_argument("--invert", action="store_true", help="invert (dark object on light ground)")
    pr.set_defaults(fn=cmd_predict)

    x = sub.add_parser("export", help="write a zoo model or a checkpoint as an ONNX file")
    x.add_argument("source", metavar="CKPT_OR_MODEL", type=model_or_checkpoint,
                   help="a run directory, an epoch-NNN.json, or a zoo model name (untrained weights)")
    x.add_argument("--onnx", type=output_onnx, required=True, help="the .onnx file to write")
    x.add_argument("--input", type=input_shape,
                   help="S, HxW or CxHxW without the batch axis (default: the size the model trains "
                   "at); charlm: a sequence length")
    x.add_argument("--opset", type=opset_number, default=17, help="ONNX opset (default 17)")
    x.add_argument("--allow-nonfinite", action="store_true",
                   help="export weights that hold NaN or infinity (refused by default)")
    x.set_defaults(fn=cmd_export)

    s = sub.add_parser("summary", help="layer shapes, parameters and MACs")
    s.add_argument("model", type=model_name)
    s.add_argument("--input", type=input_shape,
                   help="S, HxW or CxHxW, e.g. 224 or 3x224x224 (default: the size the model trains at); "
                   "charlm: a sequence length")
    s.add_argument("--num-classes", type=positive_int, default=10)
    s.set_defaults(fn=cmd_summary)

    m = sub.add_parser("models", help="every zoo model: parameters, MACs, D2L's recipe")
    m.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    m.set_defaults(fn=cmd_models)

    sh = sub.add_parser("show", help="pictures (PNG): filters, feature maps, the slides' kernels, errors")
    what = sh.add_subparsers(dest="what", required=True)
    for name, text, default in (("filters", "a convolution layer's kernels", "the first convolution"),
                                ("features", "a layer's feature maps for one image", "the first convolution"),
                                ("errors", "confusion matrix and misclassified test images", None)):
        w = what.add_parser(name, help=text, prog=f"divenet show {name}")
        checkpoint_options(w)
        if name == "features":
            w.add_argument("image", type=existing_file, help="a PNG/JPEG image")
            w.add_argument("--invert", action="store_true", help="invert (dark object on light ground)")
        if default:
            w.add_argument("--layer", type=nonempty, help=f"module path, e.g. features.0 (default {default})")
        else:
            w.add_argument("--limit", type=positive_int, help="use only the first N test examples")
        w.add_argument("--out", type=output_png, default=Path(f"{name}.png"), help=f"default {name}.png")
    w = what.add_parser("kernels", help="the slides' edge, sharpen, blur and vertical-edge kernels on a photo",
                        prog="divenet show kernels")
    w.add_argument("image", nargs="?", type=existing_file,
                   help="a PNG/JPEG photograph (default: matplotlib's sample photo of Grace Hopper)")
    w.add_argument("--out", type=output_png, default=Path("kernels.png"), help="default kernels.png")
    sh.set_defaults(fn=cmd_show)

    d = sub.add_parser("datasets", help="where each data set was found")
    d.set_defaults(fn=cmd_datasets)

    g = sub.add_parser("generate", help="sample text from a charlm checkpoint")
    checkpoint_options(g)
    g.add_argument("--prefix", default="")
    g.add_argument("--length", type=positive_int, default=200)
    g.add_argument("--temperature", type=nonnegative_float, default=1.0, help="0 picks the likeliest")
    g.add_argument("--seed", type=nonnegative_int, default=0)
    g.set_defaults(fn=cmd_generate)

    sv = sub.add_parser("serve", help="serve a checkpoint or ONNX file over HTTP (KServe v2, /v1/predict)")
    sv.add_argument("model_file", metavar="CKPT_OR_ONNX", type=existing_path,
                    help="a run directory, an epoch-NNN.json or a .onnx file")
    sv.add_argument("--engine", choices=("divenet", "onnxruntime"),
                    help="default: onnxruntime for a .onnx file, divenet for a checkpoint")
    sv.add_argument("--host", type=host_address, default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sv.add_argument("--port", type=port_number, default=8000, help="default 8000; 0 picks a free port")
    sv.add_argument("--max-batch", type=positive_int, default=32, help="most samples per batch (default 32)")
    sv.add_argument("--max-delay-ms", type=nonnegative_float, default=5.0,
                    help="longest a request waits for a batch to fill (default 5)")
    sv.add_argument("--max-queue", type=positive_int, default=256,
                    help="requests waiting beyond which the server answers 503 (default 256)")
    sv.add_argument("--timeout-s", type=positive_float, default=30.0,
                    help="limit on a body's arrival and, separately, on its answer (default 30)")
    sv.add_argument("--max-body-mb", type=positive_float, default=16.0, help="request body limit (default 16)")
    sv.add_argument("--max-pixels", type=positive_int, default=25_000_000,
                    help="largest image accepted, width x height (default 25,000,000)")
    sv.add_argument("--name", type=url_name, help="model name in the URLs (default: the model's)")
    sv.add_argument("--allow-nonfinite", action="store_true",
                    help="load weights that hold NaN or infinity (refused by default)")
    device_option(sv)
    sv.set_defaults(fn=cmd_serve)

    pf = sub.add_parser("profile", help="per-op time, MACs, GFLOP/s and bytes live of a zoo model; Chrome trace")
    traced_model_options(pf, batch=32)
    pf.add_argument("--steps", type=positive_int, default=3, help="recorded steps, averaged (default 3)")
    pf.add_argument("--warmup", type=nonnegative_int, default=1,
                    help="unrecorded steps first (default 1; one more then samples bytes live)")
    pf.add_argument("--eval", action="store_true", help="profile eval forwards instead of training steps")
    pf.add_argument("--compile", action="store_true", help="profile dn.compile(model)")
    pf.add_argument("--trace", type=output_json, help="write a Chrome trace-event file (Perfetto, chrome://tracing)")
    pf.add_argument("--top", type=positive_int, default=20, help="rows per table (default 20)")
    pf.add_argument("--depth", type=positive_int, default=1,
                    help="module table: paths cut to this many names (default 1: the top-level blocks)")
    pf.add_argument("--no-memory", action="store_true", help="do not sample bytes live (no tracemalloc)")
    device_option(pf)
    pf.set_defaults(fn=cmd_profile)

    gr = sub.add_parser("graph", help="draw the traced graph (Graphviz) with its memory plan; memory timeline")
    traced_model_options(gr, batch=1)
    gr.add_argument("--out", type=output_graph, required=True,
                    help="graph.dot, or graph.svg / graph.png (rendered by Graphviz's dot)")
    gr.add_argument("--timeline", type=output_picture,
                    help="also draw bytes live through one training step (eager, dn.checkpoint per block, "
                    "dn.compile) into this .svg or .png")
    gr.add_argument("--eval", action="store_true", help="trace an eval forward instead of a training one")
    device_option(gr)
    gr.set_defaults(fn=cmd_graph)
    return p


def _quiet_stdout():
    """After a closed pipe (``divenet summary ... | head``): point stdout at /dev/null, so that
    the interpreter's last flush at exit does not fail again (Python's documented recipe)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # not a real file (a test's capture)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def main(argv=None):
    """Run the command line; returns the exit status (2: a user error, printed as one line)."""
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as exc:  # a parse error (already printed), --help or --version
        return exc.code
    from .data.datasets import DatasetNotFoundError
    from .data.idx import IDXError
    from .io.checkpoint import CheckpointError
    from .train import TrainingDiverged

    try:
        check_args(args)
        status = args.fn(args)
        sys.stdout.flush()  # here, where a closed pipe can still be handled
    except BrokenPipeError:
        _quiet_stdout()
        return 141  # what a shell reports for a writer stopped by SIGPIPE
    except (CLIError, DatasetNotFoundError, IDXError, CheckpointError, TrainingDiverged,
            ValueError, RuntimeError) as exc:  # user errors: one clear line, no traceback
        print(f"divenet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused (a full disk, a path not allowed)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"divenet {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"divenet {args.command}: interrupted; the last complete checkpoint is kept", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
