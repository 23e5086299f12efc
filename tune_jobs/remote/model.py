"""A base model behind a URI (`model: s3://bucket/models/roberta-base`, or any URI `remote.files` accepts), staged
once per node: listed and fetched by `remote.files` (the same listing, cache key of URI, size and modification time,
atomic and size-checked copies), then linked into one local folder that `from_pretrained` loads. lora_ext never
sees the URI, only that folder.

`plan` and the spec checks fetch config.json alone (the shape is all a parameter count needs; the weights stay in
the bucket until a trial runs). A trial stages the files a PyTorch `from_pretrained` reads: other frameworks'
weights of a hub snapshot (tf_model.h5, flax_model.msgpack, ...) and, beside safetensors, pytorch_model*.bin are
left in the bucket; tokenizers are loaded from a folder without any weights. Top-level files only: subfolders
(a snapshot's onnx/, ...) are not fetched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from record.errors import InputError

from .files import RemoteFolder, cache_root, fetched, is_uri, list_folder

FIELD = "model"
HINT = ("the prefix of a save_pretrained folder or hub snapshot (config.json, weights, tokenizer files), e.g. "
        "s3://bucket/models/roberta-base uploaded with `aws s3 sync`")
OTHER_FRAMEWORKS = re.compile(r"\.(h5|msgpack|ot|onnx|gguf|tflite|mlmodel)$")
WEIGHTS = re.compile(r"\.(safetensors|bin|pt|pth|ckpt)$|\.index\.json$")


def model_folder(uri: str) -> RemoteFolder:
    """The listed folder of a model URI; one line when it is missing or has no config.json."""
    folder = list_folder(uri, FIELD, HINT)
    if "config.json" not in folder.files:
        raise InputError(FIELD, "no config.json under this prefix", got=uri, allowed=HINT)
    return folder


def needed_files(folder: RemoteFolder, weights: bool = True) -> list[str]:
    """The files `from_pretrained` reads: no other framework's weights, no .bin beside safetensors; no weights at
    all for a tokenizer (`weights=False`)."""
    names = [n for n in folder.files if not n.startswith(".") and not OTHER_FRAMEWORKS.search(n)]
    if any(n.endswith(".safetensors") for n in names):
        names = [n for n in names if not n.startswith("pytorch_model")]
    if not weights:
        names = [n for n in names if not WEIGHTS.search(n)]
    return sorted(names)


def _complete(target: Path, folder: RemoteFolder, names: list[str]) -> bool:
    """Whether `target` already links every needed file at its listed size."""
    return target.is_dir() and all((target / n).is_file() and (target / n).stat().st_size == folder.files[n][0]
                                   for n in names)


def staged_model(uri: str, weights: bool = True) -> Path:
    """A local folder holding the model at `uri`: each needed file fetched once per node (`files.fetched`),
    linked under a key of the listing, so a changed object gives a new folder and an unchanged one a cache hit."""
    from filelock import FileLock

    folder = model_folder(uri)
    names = needed_files(folder, weights)
    listing = json.dumps([folder.uri, [[n, *folder.files[n]] for n in names]])
    target = cache_root() / "models" / hashlib.sha256(listing.encode()).hexdigest()[:20]
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):  # concurrent trials on a node: one fetches, the others wait and reuse
        if _complete(target, folder, names):
            return target
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for name in names:
                (tmp / name).symlink_to(fetched(folder, name, cache_root(), FIELD).resolve())
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def local_model(model: str, weights: bool = True) -> str:
    """What `from_pretrained` loads for a `model` spec value: a URI's folder staged on this node (without weights
    for a tokenizer), else `lora_ext.model_location`'s answer (alias, local folder, hub id)."""
    from lora_ext import model_location

    return str(staged_model(model, weights)) if is_uri(model) else model_location(model)


def load_model_config(model: str, num_labels: int = 2):
    """`lora_ext.load_model_config` for any `model` value; of a URI only config.json is fetched."""
    from lora_ext import load_model_config as load_local

    if not isinstance(model, str) or not is_uri(model):
        return load_local(model, num_labels)
    config = fetched(model_folder(model), "config.json", cache_root(), FIELD)
    try:
        return load_local(str(config.parent), num_labels)  # the object's cache folder holds it alone
    except InputError as err:
        raise InputError(FIELD, err.problem, got=model, allowed=HINT) from None


__all__ = ["load_model_config", "local_model", "model_folder", "needed_files", "staged_model"]
