"""Human-readable ImageNet-1k class names, when an installed package ships them.

The toolkit ships no class-name list of its own.  timm carries the 1000 synsets (sorted, the ImageFolder order)
and their WordNet lemmas as plain text files; they are read as files (timm itself, which imports torch, is never
imported), so this works under either backend whenever timm is installed.  Without it, callers print indices.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Dict, List, Optional


@functools.lru_cache(maxsize=1)
def imagenet1k_class_names() -> Optional[List[str]]:
    """The 1000 class names in sorted-synset order (label k = ``names[k]``), or None when unavailable."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return None
    info = os.path.join(list(spec.submodule_search_locations)[0], "data", "_info")
    synsets_path = os.path.join(info, "imagenet_synsets.txt")
    lemmas_path = os.path.join(info, "imagenet_synset_to_lemma.txt")
    if not (os.path.isfile(synsets_path) and os.path.isfile(lemmas_path)):
        return None
    with open(synsets_path, encoding="utf-8") as handle:
        synsets = [line.strip() for line in handle if line.strip()]
    lemmas: Dict[str, str] = {}
    with open(lemmas_path, encoding="utf-8") as handle:
        for line in handle:
            synset, _, lemma = line.rstrip("\n").partition("\t")
            lemmas[synset] = lemma
    if len(synsets) != 1000:
        return None
    return [lemmas.get(s, s) for s in synsets]


def class_names_for_head(num_classes: int, label_offset: int = 0) -> Optional[List[str]]:
    """Names for every logit of an ImageNet head: ``label_offset`` leading extra classes (TF's background) + 1000."""
    names = imagenet1k_class_names()
    if names is None or num_classes - label_offset != len(names):
        return None
    return ["background"] * label_offset + names
