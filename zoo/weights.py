"""Offline-first weight loading with a report of what was transferred.

Nothing here touches the network: library weights (timm, torchvision) are looked up in their local
caches, and a missing file gives an error saying which file to put where. Files load with safetensors
or ``torch.load(weights_only=True)``, so a file that carries pickled code is refused and nothing in it runs.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from zoo.errors import CheckpointError

__all__ = ["LoadReport", "read_weights_file", "load_state_dict_report", "strip_prefix", "library_weights_file"]

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What happened to each tensor when a state dict was loaded into a module."""

    transferred: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the module, not in the file: left as initialised
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the module: ignored
    reinitialised: list[str] = field(default_factory=list)  # in both with different shapes: left as initialised

    def summary(self) -> str:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f", … ({len(keys)} in all)" if len(keys) > 4 else "")

        parts = [f"{len(self.transferred)} tensors transferred"]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("re-initialised (shape differs)", self.reinitialised)):
            if keys:
                parts.append(f"{len(keys)} {label}: {some(keys)}")
        return "; ".join(parts)


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor] | dict:
    """Reads a ``.safetensors`` file or a torch file with ``weights_only=True`` semantics.

    Raises:
        CheckpointError: the file is missing, unreadable, or holds pickled Python objects (refused; nothing
            in it is executed).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from e
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes): not a checkpoint or weights file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not _holds_pickled_objects(path):
            raise CheckpointError(f"{path}: not a torch checkpoint or weights file (its bytes are not a pickle "
                                  f"stream: corrupt, truncated or another format)") from None
        reason = next((line[line.index("Unsupported"):].split(". ")[0].strip() for line in str(e).splitlines()
                       if "Unsupported" in line), "")  # torch's own hint (weights_only=False) is left out on purpose
        raise CheckpointError(
            f"{path}: refused to load: the file holds pickled Python objects that weights-only loading does "
            f"not allow, and nothing in it was executed. Re-save it as a plain state dict or .safetensors"
            + (f" ({reason})" if reason else "")
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read as a torch file ({(str(e).splitlines() or [repr(e)])[0]})") from e


def _holds_pickled_objects(path: Path) -> bool:
    """Whether ``path`` is a pickle stream (raw, or a torch zip's ``data.pkl``) that names Python callables or
    classes: scanned with ``pickletools`` opcode by opcode, so nothing is executed."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                if name is None:
                    return False
                data = archive.read(name)
        else:
            data = path.read_bytes()
        ops = {op.name for op, _, _ in pickletools.genops(data)}
    except Exception:  # noqa: BLE001  (not a pickle stream at all)
        return False
    return bool(ops & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"})


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under ``prefix``, with it removed (all entries if none has it)."""
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return sub or state


def load_state_dict_report(module: nn.Module, state: dict[str, torch.Tensor], *, what: str) -> LoadReport:
    """Loads the tensors of ``state`` whose names and shapes match ``module``; logs and returns a report.

    A tensor whose shape differs (a classifier with another class count, a first convolution with other
    input channels) is left as initialised and reported, never a crash.
    """
    own = module.state_dict()
    report = LoadReport()
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif not torch.is_tensor(value) or own[key].shape != value.shape:
            report.reinitialised.append(key)
        else:
            usable[key] = value
            report.transferred.append(key)
    report.missing = [k for k in own if k not in state]
    if not usable:
        raise CheckpointError(
            f"{what}: no tensor matches the model (file keys start {list(state)[:3]}, model keys start "
            f"{list(own)[:3]}); is it the weights of another architecture?"
        )
    module.load_state_dict(usable, strict=False)
    log.info("loaded %s: %s", what, report.summary())
    return report


def _cache_miss(what: str, expected: list[Path], how: str) -> CheckpointError:
    places = "\n  ".join(str(p) for p in expected)
    return CheckpointError(
        f"{what} are not in the local cache and nothing is downloaded at run time. Put the file at\n  {places}\n"
        f"({how}), or pass a local file: model.backbone.pretrained=/path/to/weights.safetensors"
    )


def library_weights_file(source: str, name: str, tag: str | None) -> Path:
    """The local cache file of a named timm or torchvision weight.

    Args:
        source: "timm" or "torchvision".
        name: the architecture name in that library.
        tag: a timm pretrained tag ("a1_in1k") or a torchvision weights enum name ("IMAGENET1K_V1");
            ``None`` for the library's default.

    Raises:
        CheckpointError: the file is not cached; the message says where to put it.
    """
    hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
    if source == "torchvision":
        import torchvision

        enum = torchvision.models.get_model_weights(name)
        try:
            weights = enum[tag or "DEFAULT"]
        except KeyError:
            raise CheckpointError(f"torchvision/{name} has no weights {tag!r}; known: {list(enum.__members__)}") from None
        path = hub_dir / os.path.basename(weights.url)
        if not path.is_file():
            raise _cache_miss(f"torchvision weights {name}.{weights.name}", [path], f"downloaded from {weights.url}")
        return path
    import timm
    from huggingface_hub import try_to_load_from_cache

    try:
        cfg = timm.models.get_pretrained_cfg(f"{name}.{tag}" if tag else name)
    except RuntimeError:  # timm's answer to a tag its architecture doesn't have
        cfg = None
    if cfg is None:
        known = [n.partition(".")[2] for n in timm.list_pretrained(f"{name}.*")]
        raise CheckpointError(f"timm has no pretrained weights named {name}{'.' + tag if tag else ''}; known: {known}")
    expected: list[Path] = []
    if cfg.file:
        expected.append(Path(cfg.file))
    if cfg.hf_hub_id:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(hit, str):
                return Path(hit)
        from huggingface_hub.constants import HF_HUB_CACHE

        repo_dir = "models--" + cfg.hf_hub_id.replace("/", "--")
        # huggingface_hub resolves the revision "main" through refs/main; without that file it looks in
        # snapshots/main, so this path works for a file put there by hand.
        expected.append(Path(HF_HUB_CACHE) / repo_dir / "snapshots/main/model.safetensors")
    if cfg.url:
        expected.append(hub_dir / os.path.basename(cfg.url))
    for p in expected:
        if p.is_file():
            return p
    return_hint = f"timm.create_model({name + ('.' + tag if tag else '')!r}, pretrained=True) on a machine with network"
    raise _cache_miss(f"timm weights {name}{'.' + tag if tag else ''}", expected, return_hint)
