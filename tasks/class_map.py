"""Map ImageFolder class folders onto a model's class indices.

torchvision's ``ImageFolder`` numbers the folders it finds 0..K-1. A pretrained
model predicts its own indices (0..999 for ImageNet), so an ImageFolder with a
subset of the classes gets silently wrong labels. Here every folder name is
looked up in the model's class list instead: WordNet ids (``n01440764``) or
class names (``tench``, ``great_white_shark``), from the ImageNet list
(``class_map='imagenet'``) or from a file the user passes. Without a class map
the folders are numbered in sorted order, as torchvision does, which is only
right when their count equals the model's number of classes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from zaqbench.errors import UserError

WNIDS_FILE = Path(__file__).resolve().parent / "data" / "imagenet_wnids.txt"
WNID = re.compile(r"^n\d{8}$")
MAP_HELP = ("set task.data.class_map to 'imagenet' (folders named by WordNet id such as n01440764 or by "
            "ImageNet class name) or to a .txt file (line i: the WordNet id and/or name of class i) "
            "or a .json file ({folder: index})")


def normalise(name: str) -> str:
    """'Great_White-Shark ' -> 'great white shark': folder names and class names compare equal."""
    return " ".join(re.split(r"[\s_\-]+", name.strip().lower()))


def imagenet_aliases() -> list[set[str]]:
    """Per ImageNet-1k index: {its WordNet id, its torchvision class name}."""
    import torchvision

    wnids = [ln.strip() for ln in WNIDS_FILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    names = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert len(wnids) == len(names) == 1000, "tasks/data/imagenet_wnids.txt must list 1000 ids"
    return [{w, normalise(n)} for w, n in zip(wnids, names)]


def _aliases_from_file(path: Path) -> list[set[str]] | dict[str, int]:
    if not path.is_file():
        raise UserError(f"class map file '{path}' does not exist; {MAP_HELP}")
    text = path.read_text(errors="replace")
    if path.suffix == ".json":
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"class map '{path}' is not valid JSON: {err}") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                    for v in mapping.values()):
            raise UserError(f"class map '{path}' must be a JSON object {{folder name: class index}}")
        return {normalise(k): v for k, v in mapping.items()}
    aliases = []
    for line in text.splitlines():
        first, _, rest = line.strip().partition(" ")
        aliases.append({first, normalise(rest)} - {""} if WNID.match(first) else {normalise(line)} - {""})
    return aliases


def class_aliases(setting: str | None) -> list[set[str]] | dict[str, int] | None:
    """The model's classes as alias sets per index, a direct {folder: index} map, or None."""
    if setting is None:
        return None
    if str(setting).lower() == "imagenet":
        return imagenet_aliases()
    return _aliases_from_file(Path(str(setting)).expanduser())


def map_folders(folders: list[str], setting: str | None, num_classes: int, where: Path) -> dict[str, int]:
    """{folder name: model class index} for every folder, or one ``UserError`` line naming the
    folders that cannot be mapped and how to fix it."""
    if not folders:
        raise UserError(f"no class folders in '{where}'; lay out <data-root>/{{train,val}}/<class>/<image files>")
    aliases = class_aliases(setting)
    if aliases is None:
        if len(folders) != num_classes:
            raise UserError(f"'{where}' has {len(folders)} class folders but the model has {num_classes} "
                            f"classes, so the folders cannot be numbered in order; {MAP_HELP}")
        return {f: i for i, f in enumerate(sorted(folders))}
    if isinstance(aliases, dict):
        index = aliases
    else:
        index, ambiguous = {}, set()
        for i, names in enumerate(aliases):
            for name in names:
                if name in index and index[name] != i:
                    ambiguous.add(name)
                index.setdefault(name, i)
        for name in ambiguous:
            del index[name]
    mapping = {f: index[normalise(f)] if normalise(f) in index else index.get(f) for f in folders}
    missing = sorted(f for f, i in mapping.items() if i is None)
    if missing:
        raise UserError(f"{len(missing)} of {len(folders)} class folders in '{where}' are not classes of the "
                        f"model's class map '{setting}' (e.g. {', '.join(missing[:5])}); rename them to WordNet "
                        f"ids or class names, or {MAP_HELP}")
    out_of_range = sorted(f for f, i in mapping.items() if not 0 <= i < num_classes)
    if out_of_range:
        raise UserError(f"class folders {', '.join(out_of_range[:5])} in '{where}' map to indices outside the "
                        f"model's {num_classes} classes (task.model.num_classes); check task.data.class_map")
    return mapping
