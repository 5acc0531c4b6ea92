"""The installed distribution says MIT (SPDX) and carries both licence texts: the package's
and the BSD-3-Clause notice of the shipped BasicMotions data."""
import importlib.metadata as md

import pytest


def _dist():
    try:
        return md.distribution("deepshift-edge")
    except md.PackageNotFoundError:  # pragma: no cover - run from a tree that is not installed
        pytest.skip("deepshift-edge is not installed")


def test_metadata_has_the_spdx_licence_and_both_licence_files():
    meta = _dist().metadata
    assert meta["License-Expression"] == "MIT"
    assert sorted(meta.get_all("License-File") or []) == ["LICENSE", "LICENSE-BasicMotions"]
    assert not any(c.startswith("License ::") for c in meta.get_all("Classifier") or [])


def test_the_licence_texts_are_installed():
    dist = _dist()
    texts = {}
    for f in dist.files or []:
        if f.parent.name == "licenses":
            texts[f.name] = f.read_text(encoding="utf-8")
    assert "MIT License" in texts["LICENSE"] and "Permission is hereby granted" in texts["LICENSE"]
    bsd = texts["LICENSE-BasicMotions"]
    assert "BSD 3-Clause License" in bsd and "The aeon developers" in bsd
    from deepshift_edge.data import datasets
    assert datasets.load_basicmotions().licence.strip() in bsd
